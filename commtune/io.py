"""File reads with one-line errors, and atomic writes: a reader never sees a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from commtune.errors import CommtuneError


def read_text(path: str | os.PathLike, what: str = "") -> str:
    """The UTF-8 text of ``path``; an unreadable or binary file is one
    CommtuneError line (``cannot read <what> '<path>': <reason>``). Every file
    commtune reads goes through here."""
    label = f"{what} " if what else ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: not a UTF-8 text file (byte {exc.start}: "
                            f"{exc.reason}); give a text file (JSON, YAML or CSV)") from None
    except OSError as exc:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: {exc.strerror}") from None


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, before any work, if ``path`` cannot be written: its folder
    must exist (reading or checking never creates folders) and accept a new
    file, and ``path`` must not be a folder. Creates and removes one probe
    file; leaves nothing behind."""
    p = Path(path)
    if p.is_dir():
        raise CommtuneError(f"{what} {str(path)!r} is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CommtuneError(f"cannot write {what} {str(path)!r}: folder {str(parent)!r} does not exist (create it first)")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".check", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CommtuneError(f"cannot write {what} {str(path)!r}: folder {str(parent)!r}: {exc.strerror}") from None
    return p


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
