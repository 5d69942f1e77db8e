"""Optuna storage from a URL: SQLite/any RDB URL, a journal file, or memory.

* ``sqlite:///path.db``, ``postgresql://...``, ``mysql+pymysql://...``: RDB
* ``journal:///abs/path.log`` or any path ending in ``.log``: journal file
  (``optuna.storages.journal.JournalFileBackend``; fine on NFS)
* a path ending in ``.db``/``.sqlite``/``.sqlite3``: SQLite file
* ``memory`` (or ``:memory:``): in-process only, nothing is kept

``postgresql://`` means psycopg 3 (``pip install 'commtune[postgres]'``).
RDB storages record Optuna heartbeats (:mod:`commtune.search.liveness`):
a trial whose worker died is failed and retried after the grace period.
"""
from __future__ import annotations

from pathlib import Path

from commtune.errors import CommtuneError
from commtune.io import special_kind
from commtune.search.liveness import GRACE_S, HEARTBEAT_S, MAX_RETRY


def normalise(url: str) -> str:
    """The canonical form of a storage argument."""
    u = str(url).strip()
    if u in ("memory", ":memory:"):
        return "memory"
    if u.startswith("journal://"):
        return u
    if "://" not in u:
        p = Path(u).expanduser()
        if p.suffix == ".log":
            return f"journal://{p.resolve()}" if not p.is_absolute() else f"journal://{p}"
        if p.suffix in (".db", ".sqlite", ".sqlite3"):
            return f"sqlite:///{p.resolve()}"
        raise CommtuneError(
            f"unusable storage {url!r}: give an RDB URL (sqlite:///file.db), a journal file "
            f"(journal:///path/file.log or file.log) or 'memory'"
        )
    if u.startswith("postgresql://") or u.startswith("postgres://"):
        return "postgresql+psycopg://" + u.split("://", 1)[1]  # SQLAlchemy 2's default is psycopg2
    return u


def portable(url: str | None) -> str:
    """What a profile records: RDB server URLs without password, files by name only.

    A profile travels to other machines; an absolute path of this machine
    (``sqlite:////home/me/...``) means nothing there.
    """
    if not url:
        return "memory"
    u = normalise(url)
    if u == "memory":
        return u
    for scheme in ("sqlite:///", "journal://"):
        if u.startswith(scheme):
            return scheme + Path(u[len(scheme):]).name
    return display(u)


_FIX = ("give sqlite:///file.db (its folder must exist), journal:///path/file.log, an RDB URL whose driver is "
        "installed, or 'memory'")


def check_storage(url: str, must_exist: bool = False) -> str:
    """Check a storage URL before any work, without creating or changing anything;
    one CommtuneError line naming the URL and the fix. ``must_exist``: the
    storage is only read (a missing file is an error, not a new study)."""
    u = normalise(url)
    shown = display(u)
    if u == "memory":
        if must_exist:
            raise CommtuneError(f"storage {url!r} holds nothing to read; give the storage the search wrote")
        return u
    if u.startswith("journal://") or u.startswith("sqlite:///"):
        path = Path(u[len("journal://"):] if u.startswith("journal://") else u[len("sqlite:///"):])
        if not str(path) or str(path) == ".":
            raise CommtuneError(f"unusable storage {url!r}: no file path; {_FIX}")
        kind = special_kind(path)
        if kind:  # a folder, FIFO or device: SQLite or the journal would block on it or read it forever
            raise CommtuneError(f"unusable storage {shown!r}: {str(path)!r} is {kind}, not a regular file; {_FIX}")
        if must_exist and not path.is_file():
            raise CommtuneError(f"storage {shown!r}: file {str(path)!r} does not exist; give the storage the search wrote")
        if not path.parent.is_dir():
            raise CommtuneError(f"unusable storage {shown!r}: folder {str(path.parent)!r} does not exist; create it or "
                                f"{_FIX}")
        if u.startswith("sqlite:///") and path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise CommtuneError(f"unusable storage {shown!r}: {str(path)!r} is not an SQLite database; "
                                        f"give another file name or {_FIX}")
        return u
    try:
        from sqlalchemy.engine import make_url

        dialect = make_url(u).get_dialect()
    except Exception as exc:  # noqa: BLE001 -- unknown scheme, missing driver module, malformed URL
        raise CommtuneError(f"unusable storage {shown!r}: {_one_line(exc)}; {_FIX}") from None
    try:
        dialect.import_dbapi()  # the driver itself: get_dialect() alone does not import it
    except ImportError:
        raise CommtuneError(_missing_driver(u)) from None
    return u


def check_server(url: str, timeout_s: float = 10.0) -> None:
    """Connect once to an RDB server storage (PostgreSQL, MySQL) and close, so
    an unreachable or refusing server is one CommtuneError line before any
    folder or file is made; files and ``memory`` are left alone. Creates no
    table."""
    u = normalise(url)
    if u == "memory" or u.startswith(("journal://", "sqlite:")):
        return
    import sqlalchemy

    connect_args = {"connect_timeout": int(timeout_s)} if u.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(u, connect_args=connect_args)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except ImportError:
        raise CommtuneError(_missing_driver(u)) from None
    except Exception as exc:  # noqa: BLE001 -- any failure is the server's or the URL's
        raise CommtuneError(f"unusable storage {display(u)!r}: {_one_line(exc)}") from None


def display(url: str) -> str:
    """The URL with any password hidden (for profiles and output)."""
    if "://" in url and "@" in url and not url.startswith("journal://"):
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).render_as_string(hide_password=True)
        except Exception:
            return url.split("://", 1)[0] + "://***"
    return url


def open_storage(url: str | None, create_dirs: bool = False, heartbeat_s: int = HEARTBEAT_S,
                 grace_s: int = GRACE_S):
    """An Optuna storage object (None for in-memory); RDBs with heartbeats every ``heartbeat_s``."""
    if url is None:
        return None
    u = normalise(url)
    if u == "memory":
        return None
    import optuna

    if u.startswith("journal://"):
        path = u[len("journal://"):]
        if not path:
            raise CommtuneError(f"unusable storage {url!r}: journal:// needs a file path")
        p = Path(path)
        if create_dirs:
            p.parent.mkdir(parents=True, exist_ok=True)
        if not p.parent.is_dir():
            raise CommtuneError(f"unusable storage {url!r}: folder {str(p.parent)!r} does not exist")
        try:
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(p)))
        except Exception as exc:  # noqa: BLE001 -- any failure is the user's URL
            raise CommtuneError(f"unusable storage {url!r}: {_one_line(exc)}") from None
    if u.startswith("sqlite:///"):
        p = Path(u[len("sqlite:///"):])
        if create_dirs:
            p.parent.mkdir(parents=True, exist_ok=True)
        if str(p) and not p.parent.is_dir():
            raise CommtuneError(f"unusable storage {url!r}: folder {str(p.parent)!r} does not exist")
        _warn_network_fs(p)
    if u.startswith("sqlite:///") and str(p):
        # Workers on one host creating the schema of a new file at once would
        # race; a lock file beside the database serialises the creation.
        import fcntl

        with open(f"{p}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _rdb_storage(u, url, heartbeat_s, grace_s)
    return _rdb_storage(u, url, heartbeat_s, grace_s)


def _rdb_storage(u: str, url: str, heartbeat_s: int, grace_s: int):
    import time
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    liveness = {"heartbeat_interval": heartbeat_s, "grace_period": grace_s,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)}
    for attempt in range(6):
        try:
            if u.startswith("sqlite:///"):
                from commtune.search.sqlite_storage import SqliteStorage

                return SqliteStorage(u, engine_kwargs=_engine_kwargs(u), **liveness)
            return optuna.storages.RDBStorage(u, engine_kwargs=_engine_kwargs(u), **liveness)
        except ImportError:  # Optuna re-raises the driver's ModuleNotFoundError as a bare ImportError
            raise CommtuneError(_missing_driver(u)) from None
        except Exception as exc:  # noqa: BLE001
            # Two workers (on different hosts) creating the schema of a new
            # database at once: one loses the race ("table ... already exists",
            # or a duplicate alembic version row); the schema is there on retry.
            racy = "already exists" in str(exc) or "UNIQUE constraint failed: alembic_version" in str(exc)
            if racy and attempt < 5:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise CommtuneError(f"unusable storage {display(url)!r}: {_one_line(exc)}") from None
    raise AssertionError("unreachable")


class _SqliteConnect:
    """Connection factory for SQLite (a class, so storages stay picklable for Ray).

    Several worker processes share one file: wait for the lock instead of
    failing. WAL + synchronous=NORMAL: a commit survives the process being
    killed (kill -9) without an fsync per trial (which made every trial cost
    ~100 ms here); only an OS crash can lose the last commits.
    """

    def __init__(self, path: str):
        self.path = path

    def __call__(self):
        import sqlite3

        # isolation_level=None: no implicit BEGIN from the driver; every
        # transaction starts with BEGIN IMMEDIATE instead (see commtune.search.sqlite_storage).
        con = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return {"creator": _SqliteConnect(url[len("sqlite:///"):])}
    return {}


_DRIVERS = {"postgresql+psycopg": ("psycopg", "pip install 'commtune[postgres]'")}


def _missing_driver(u: str) -> str:
    scheme = u.split("://", 1)[0]
    module, hint = _DRIVERS.get(scheme, (scheme.split("+")[-1], f"install the Python driver for {scheme}"))
    return f"storage {display(u)!r} needs the database driver {module!r}: {hint}"


def _warn_network_fs(path: Path) -> None:
    """SQLite's locks are unreliable on network file systems: say so once, on stderr."""
    fstype = mount_type(path)
    if fstype.startswith(("nfs", "cifs", "smb", "9p", "fuse.sshfs", "ceph", "glusterfs")):
        import sys

        print(f"commtune: warning: SQLite study {str(path)!r} is on {fstype}, where SQLite locking is unreliable; "
              "share a study across machines with postgresql:// (or a journal:// file)", file=sys.stderr)


def mount_type(path: Path) -> str:
    """File system type of the mount holding ``path`` (from /proc/mounts; '' if unknown)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.parent.resolve())
    best, kind = "", ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, kind = mnt, parts[2]
    return kind


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {msg}"[:300]


__all__ = ["normalise", "check_storage", "display", "portable", "open_storage", "mount_type"]
