"""Processes that look like other machines or containers, on one host.

:func:`spawn` runs a command in an emulated host's network namespace (if
given) and in fresh UTS and PID namespaces: it has its own hostname and is
PID 1 of its own PID namespace, as in a container. Two such processes may
share a hostname and a PID and still be different workers.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class Machine:
    """A command running as another machine; ``pid`` is the outer PID of its init (PID 1 inside)."""

    name: str
    proc: subprocess.Popen

    @property
    def pid(self) -> int | None:
        """The host PID of the namespaced process (the child of ``unshare --fork``)."""
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def kill(self) -> None:
        """kill -9 the machine's process (and so its whole PID namespace)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def pause(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        os.kill(pid, signal.SIGSTOP)
        return True

    def resume(self) -> None:
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)


def spawn(name: str, hostname: str, argv: Sequence[str], *, netns: str | None = None, env: dict | None = None,
          cwd: str | os.PathLike | None = None, stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> Machine:
    """Start ``argv`` with hostname ``hostname`` in new UTS + PID namespaces (inside ``netns``)."""
    inner = f"hostname {shlex.quote(hostname)} && exec {shlex.join(argv)}"
    cmd = [*(["ip", "netns", "exec", netns] if netns else []), "unshare", "--uts", "--pid", "--fork",
           "--kill-child", "sh", "-c", inner]
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=stderr, text=True)
    deadline = time.monotonic() + 10
    m = Machine(name, proc)
    while m.pid is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return m


__all__ = ["Machine", "spawn"]
