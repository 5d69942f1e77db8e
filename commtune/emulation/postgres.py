"""A throwaway PostgreSQL server for shared-study tests and benchmarks.

Uses the distribution's server binaries (Debian: package ``postgresql``,
``/usr/lib/postgresql/<version>/bin``). ``initdb`` refuses to run as root, so
the cluster belongs to the ``postgres`` user; it trusts every local
connection, skips fsync and lives in a fresh folder that is removed on exit.
Bind it to 127.0.0.1 or, inside an emulated host's namespace, to that host's
bridge address so workers in the other namespaces reach it over the bridge.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from commtune.errors import CommtuneError

USER = "postgres"


def server_bin() -> Path | None:
    """The newest installed PostgreSQL server bin folder (None if there is none)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing() -> str | None:
    """Why a server cannot be started here (None when it can)."""
    if server_bin() is None:
        return "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as its own user needs root"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER!r} user"
    return None


def _as_postgres(argv: list[str], prefix: list[str], timeout_s: float = 60.0) -> None:
    r = subprocess.run([*prefix, "runuser", "-u", USER, "--", *argv], capture_output=True, text=True,
                       timeout=timeout_s)
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise CommtuneError(f"{Path(argv[0]).name} failed: {last[0]}")


@contextlib.contextmanager
def postgres_server(host: str = "127.0.0.1", port: int = 55432, netns: str | None = None,
                    database: str = "commtune") -> Iterator[str]:
    """Start a server listening on ``host:port`` (in ``netns`` if given); yield its URL; stop and remove it."""
    why = missing()
    if why:
        raise CommtuneError(why)
    bin_dir = server_bin()
    prefix = ["ip", "netns", "exec", netns] if netns else []
    root = Path(tempfile.mkdtemp(prefix="ct-pg-"))
    data = root / "data"
    user = pwd.getpwnam(USER)
    os.chmod(root, 0o755)
    data.mkdir(mode=0o700)
    os.chown(data, user.pw_uid, user.pw_gid)
    log = root / "server.log"
    log.touch()
    os.chown(log, user.pw_uid, user.pw_gid)
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
                      "--no-sync"], prefix)
        with open(data / "pg_hba.conf", "a") as hba:  # clients on the server's own subnets (the emulated bridge)
            hba.write("host all all samenet trust\n")
        opts = (f"-c listen_addresses={host} -p {port} -c unix_socket_directories={data} -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _as_postgres([*pg_ctl, "-o", opts, "-l", str(log), "-w", "-t", "60", "start"], prefix)
        started = True
        _as_postgres([str(bin_dir / "createdb"), "-h", host, "-p", str(port), "-U", USER, database], prefix)
        yield f"postgresql://{USER}@{host}:{port}/{database}"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _as_postgres([*pg_ctl, "-m", "immediate", "-w", "stop"], prefix)
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["postgres_server", "server_bin", "missing"]
