"""File reads with one-line errors, and atomic writes: a reader never sees a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from commtune.errors import CommtuneError


def read_text(path: str | os.PathLike, what: str = "") -> str:
    """The text of ``path``; an unreadable file is one CommtuneError line
    (``cannot read <what> '<path>': <reason>``)."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        label = f"{what} " if what else ""
        raise CommtuneError(f"cannot read {label}{str(path)!r}: {exc.strerror}") from None


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the same folder as
    ``path`` (same suffix), then move it over ``path`` with ``os.replace``;
    parent folders are created. On any failure nothing is left behind."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise CommtuneError(f"cannot write {str(p)!r}: {exc.strerror}") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CommtuneError(f"cannot write {str(p)!r}: {exc.strerror}") from None
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
