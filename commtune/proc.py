"""Small process helpers."""
from __future__ import annotations

import os


def pid_alive(pid: int | str) -> bool:
    """Whether process ``pid`` exists on this host (True when we cannot tell)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
