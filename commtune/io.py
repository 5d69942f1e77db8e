"""File reads with one-line errors, and atomic writes: a reader never sees a half-written file."""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from commtune.errors import CommtuneError

#: Largest file any reader takes (bytes): the biggest model profile or benchmark JSON is well under 1 MiB.
MAX_TEXT_BYTES = 16 * 2**20

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def special_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("a folder",
    "a FIFO (named pipe)", "a character device", ...); None when it is a
    regular file or does not exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def _mib(n: float) -> str:
    return f"{n / 2**20:.3g} MiB"


def check_regular_file(path: str | os.PathLike, what: str = "", max_bytes: int = MAX_TEXT_BYTES) -> os.stat_result:
    """``path``'s stat if it is a regular file of at most ``max_bytes``; else one
    CommtuneError line (``cannot read <what> '<path>': ...``). Opens nothing, so
    a FIFO or a device is refused before any read could block or never end."""
    label = f"{what} " if what else ""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: {exc.strerror}") from None
    _check_stat(st, path, label, max_bytes)
    return st


def _check_stat(st: os.stat_result, path: str | os.PathLike, label: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CommtuneError(f"cannot read {label}{str(path)!r}: it is {_kind(st.st_mode)}; give a regular file")
    if st.st_size > max_bytes:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: {_mib(st.st_size)} is more than the "
                            f"{_mib(max_bytes)} a {label or 'file '}may hold")


def read_text(path: str | os.PathLike, what: str = "", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable, binary or oversize
    file, a folder, a FIFO or a device is one CommtuneError line (``cannot read
    <what> '<path>': <reason>``), refused before any read. Reads at most
    ``max_bytes``. Every file commtune reads goes through here."""
    label = f"{what} " if what else ""
    check_regular_file(path, what, max_bytes)
    try:
        # O_NONBLOCK: a path swapped for a FIFO after the check cannot block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: {exc.strerror}") from None
    try:
        _check_stat(os.fstat(fd), path, label, max_bytes)  # what was opened, not what was checked
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > max_bytes:  # grew while being read
        raise CommtuneError(f"cannot read {label}{str(path)!r}: more than the {_mib(max_bytes)} a "
                            f"{label or 'file '}may hold")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommtuneError(f"cannot read {label}{str(path)!r}: not a UTF-8 text file (byte {exc.start}: "
                            f"{exc.reason}); give a text file (JSON, YAML or CSV)") from None


def _not_special(path: str | os.PathLike, what: str) -> Path:
    """``Path(path)``, unless it exists and is not a regular file."""
    kind = special_kind(path)
    if kind:
        raise CommtuneError(f"cannot write {what} {str(path)!r}: it is {kind}; give a regular file name")
    return Path(path)


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, before any work, if ``path`` cannot be written: its folder
    must exist (reading or checking never creates folders) and accept a new
    file, and ``path``, if it exists, must be a regular file (never a folder,
    FIFO or device, which the atomic rename would replace). Creates and removes
    one probe file; leaves nothing behind."""
    p = _not_special(path, what)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CommtuneError(f"cannot write {what} {str(path)!r}: folder {str(parent)!r} does not exist (create it first)")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".check", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        # /proc answers ENOENT for a new file in a folder that exists
        why = ("is not a place for files (a system folder)" if exc.errno == errno.ENOENT else
               f"is not writable ({exc.strerror})" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else
               f"cannot take a new file ({exc.strerror})")
        raise CommtuneError(f"cannot write {what} {str(path)!r}: folder {str(parent)!r} {why}; "
                            "give a path in a writable folder") from None
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the same folder as
    ``path`` (same suffix), then move it over ``path`` with ``os.replace``;
    parent folders are created. On any failure nothing is left behind; an
    existing folder, FIFO or device at ``path`` is refused, never replaced."""
    p = _not_special(path, "file")
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
