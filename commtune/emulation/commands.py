"""Running ``ip``/``tc``/``iptables`` and checking the machine can host a cluster."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from commtune.errors import CommtuneError


def run_cmd(argv: Sequence[str], *, check: bool = True, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run one command (no shell); on failure raise a CommtuneError naming it and its stderr."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise CommtuneError(f"command not found: {argv[0]} (needed by the emulated cluster)") from None
    except subprocess.TimeoutExpired:
        raise CommtuneError(f"command timed out after {timeout_s:g} s: {' '.join(argv)}") from None
    if check and proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        raise CommtuneError(f"command failed: {' '.join(argv)}: {detail}")
    return proc


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """argv prefixed to run inside a named network namespace."""
    return ["ip", "netns", "exec", netns, *argv]


def require_root_and_tools(extra: Sequence[str] = ()) -> None:
    """Refuse (CommtuneError) unless on Linux, root, with ``ip``, ``tc`` and any ``extra`` tools."""
    if not sys.platform.startswith("linux"):
        raise CommtuneError("the emulated cluster needs Linux network namespaces; this is " + sys.platform)
    if os.geteuid() != 0:
        raise CommtuneError("the emulated cluster needs root (network namespaces, tc); run as root")
    missing = [t for t in ("ip", "tc", *extra) if shutil.which(t) is None]
    if missing:
        hint = {"ip": "iproute2", "tc": "iproute2", "iptables": "iptables", "gcc": "gcc"}
        pkgs = sorted({hint.get(t, t) for t in missing})
        raise CommtuneError(
            f"the emulated cluster needs {', '.join(missing)} on PATH; install: apt-get install -y {' '.join(pkgs)}"
        )


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = run_cmd(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
