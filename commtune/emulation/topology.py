"""Bringing an emulated cluster up and down: namespaces, veths, bridge, shaping, delay."""
from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from commtune.emulation import native
from commtune.emulation.commands import in_netns, list_netns, require_root_and_tools, run_cmd
from commtune.emulation.spec import EmulatedCluster
from commtune.emulation.state import (
    IFNAME,
    ClusterState,
    HostInfo,
    at_host_priority,
    read_state,
    remove_state,
    run_dir,
    state_path,
    write_state,
)
from commtune.errors import CommtuneError

BRIDGE = "br0"
NFQUEUE_NUM = 0
DELAY_BINARY_STEM = "nfq_delay-"
_HELPERS: dict[int, subprocess.Popen[bytes]] = {}  # delay helpers started by this process


def _ours(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-(host\d+|br)$")


def _bits(rate_Bps: float) -> str:
    return f"{max(1, int(round(rate_Bps * 8)))}bit"


def _shape(netns: str, dev: str, rate_Bps: float) -> None:
    """htb root on ``dev`` in ``netns``: one class at ``rate`` = ``ceil`` (egress cap)."""
    r = _bits(rate_Bps)
    run_cmd(["tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10"])
    run_cmd(["tc", "-n", netns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10",
             "htb", "rate", r, "ceil", r, "quantum", "65536"])


def _start_delay_helper(binary: Path, spec: EmulatedCluster) -> int:
    """Start the NFQUEUE delay program for all host namespaces; return its pid once it is ready."""
    log = open(run_dir() / f"nfq-delay-{spec.prefix}.log", "ab")
    argv = at_host_priority([str(binary), str(int(round(spec.latency_s * 1e9))), str(NFQUEUE_NUM), spec.prefix,
                             *[f"/run/netns/{spec.host_netns(i)}" for i in range(spec.hosts)]])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                            start_new_session=True)
    log.close()
    _HELPERS[proc.pid] = proc
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        raise CommtuneError(f"the latency helper did not start (see {run_dir() / f'nfq-delay-{spec.prefix}.log'})")
    return proc.pid


def up(spec: EmulatedCluster, *, replace: bool = False) -> ClusterState:
    """Create the cluster described by ``spec``; on any failure remove what was made and re-raise."""
    require_root_and_tools()
    if spec.latency_s > 0 and shutil.which("iptables") is None:
        raise CommtuneError(f"--latency needs iptables and libnetfilter_queue; install: {native.NFQ_INSTALL_HINT}")
    existing = _leftovers(spec.prefix)
    if read_state(spec.prefix) is not None or existing:
        if not replace:
            raise CommtuneError(
                f"an emulated cluster with prefix {spec.prefix!r} is already up; "
                "run `commtune cluster down` first or pass --replace"
            )
        down(spec.prefix)
    build = run_dir() / "build"
    shim = native.pacing_shim(build) if spec.per_stream_Bps is not None else None
    delay_bin = native.nfq_delay(build) if spec.latency_s > 0 else None
    try:
        return _create(spec, shim, delay_bin)
    except BaseException:
        down(spec.prefix)
        raise


def _create(spec: EmulatedCluster, shim: Path | None, delay_bin: Path | None) -> ClusterState:
    br = spec.bridge_netns
    run_cmd(["ip", "netns", "add", br])
    run_cmd(["ip", "-n", br, "link", "set", "lo", "up"])
    run_cmd(["ip", "-n", br, "link", "add", BRIDGE, "type", "bridge"])
    run_cmd(["ip", "-n", br, "link", "set", BRIDGE, "addrgenmode", "none"])
    run_cmd(["ip", "-n", br, "link", "set", BRIDGE, "up"])
    net_bits = spec.subnet.split("/")[1]
    hosts = []
    for i in range(spec.hosts):
        ns, port, addr = spec.host_netns(i), f"h{i}", spec.host_address(i)
        run_cmd(["ip", "netns", "add", ns])
        run_cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Both ends are created directly inside their namespaces: nothing touches the root namespace.
        run_cmd(["ip", "link", "add", "name", IFNAME, "netns", ns, "type", "veth", "peer", "name", port, "netns", br])
        run_cmd(["ip", "-n", ns, "link", "set", IFNAME, "addrgenmode", "none"])
        run_cmd(["ip", "-n", ns, "addr", "add", f"{addr}/{net_bits}", "dev", IFNAME])
        run_cmd(["ip", "-n", br, "link", "set", port, "addrgenmode", "none"])
        run_cmd(["ip", "-n", br, "link", "set", port, "master", BRIDGE])
        _shape(ns, IFNAME, spec.link_rate_Bps)  # host -> bridge
        _shape(br, port, spec.link_rate_Bps)  # bridge -> host: caps the host's ingress too
        run_cmd(["ip", "-n", br, "link", "set", port, "up"])
        run_cmd(["ip", "-n", ns, "link", "set", IFNAME, "up"])
        hosts.append(HostInfo(index=i, netns=ns, ifname=IFNAME, address=addr))
    pids: list[int] = []
    if delay_bin is not None:
        pids.append(_start_delay_helper(delay_bin, spec))
        for i in range(spec.hosts):
            run_cmd(in_netns(spec.host_netns(i), ["iptables", "-w", "-A", "OUTPUT", "-o", IFNAME, "-j", "NFQUEUE",
                                                  "--queue-num", str(NFQUEUE_NUM), "--queue-bypass"]))
    state = ClusterState(
        prefix=spec.prefix,
        bridge_netns=br,
        subnet=spec.subnet,
        hosts=hosts,
        link_rate_Bps=spec.link_rate_Bps,
        per_stream_Bps=spec.per_stream_Bps,
        latency_s=spec.latency_s,
        shim_path=str(shim) if shim else None,
        delay_helper=str(delay_bin) if delay_bin else None,
        helper_pids=pids,
        created_at=time.time(),
    )
    write_state(state)
    return state


def status(prefix: str = "ct") -> ClusterState | None:
    """The running cluster's state, or None when none is recorded."""
    return read_state(prefix)


def problems(state: ClusterState) -> list[str]:
    """What is wrong with a recorded cluster (missing namespaces, dead helpers); [] when healthy."""
    present = set(list_netns())
    out = [f"namespace {ns} is missing" for ns in [state.bridge_netns, *(h.netns for h in state.hosts)]
           if ns not in present]
    out += [f"latency helper pid {pid} is not running" for pid in state.helper_pids
            if not _is_delay_helper(pid, state.prefix)]
    return out


def _leftovers(prefix: str) -> list[str]:
    try:
        names = list_netns()
    except CommtuneError:
        return []
    pat = _ours(prefix)
    return [n for n in names if pat.match(n)]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_delay_helper(pid: int, prefix: str) -> bool:
    argv = _cmdline(pid)
    if len(argv) < 4 or not os.path.basename(argv[0]).startswith(DELAY_BINARY_STEM) or argv[3] != prefix:
        return False
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pids_in_netns(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of the named ones."""
    inodes = set()
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{name}")
            inodes.add((st.st_dev, st.st_ino))
    pids = []
    if not inodes:
        return pids
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{entry}/ns/net")
                if (st.st_dev, st.st_ino) in inodes:
                    pids.append(int(entry))
    return pids


def _kill(pids: list[int], grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace_s``; reap our own children."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            proc = _HELPERS.get(pid)
            if proc is not None and proc.poll() is not None:
                alive.remove(pid)
            elif proc is None and not Path(f"/proc/{pid}").exists():
                alive.remove(pid)
            elif proc is None and _zombie(pid):
                alive.remove(pid)
        time.sleep(0.02)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        proc = _HELPERS.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def down(prefix: str = "ct") -> list[str]:
    """Remove the cluster with ``prefix`` and any leftovers of a crashed one; idempotent.

    Kills its latency helpers and any process still inside its namespaces,
    deletes the namespaces (their veths, bridge, qdiscs and iptables rules go
    with them) and the state file. Returns what was removed.
    """
    if not re.match(r"^[a-z][a-z0-9]{0,7}$", prefix):
        raise CommtuneError(f"bad prefix {prefix!r}")
    removed: list[str] = []
    try:
        state = read_state(prefix)
    except CommtuneError:
        state = None
    helpers = set(state.helper_pids if state else [])
    helpers |= {int(p) for p in os.listdir("/proc") if p.isdigit() and _is_delay_helper(int(p), prefix)}
    helpers = {p for p in helpers if _is_delay_helper(p, prefix) or p in _HELPERS}
    if helpers:
        _kill(sorted(helpers))
        removed += [f"latency helper {p}" for p in sorted(helpers)]
    if os.geteuid() == 0:
        names = _leftovers(prefix)
        stuck = _pids_in_netns(names)
        if stuck:
            _kill(stuck)
            removed += [f"process {p}" for p in stuck]
        for name in names:
            run_cmd(["ip", "netns", "del", name], check=False)
            removed.append(f"namespace {name}")
        # Nothing is ever created in the root namespace, but clean up anything named like ours.
        links = run_cmd(["ip", "-o", "link", "show"], check=False).stdout
        for m in re.finditer(rf"^\d+:\s+({re.escape(prefix)}-[^:@\s]+)", links, re.M):
            run_cmd(["ip", "link", "del", m.group(1)], check=False)
            removed.append(f"link {m.group(1)}")
    elif state is not None or _leftovers(prefix):
        raise CommtuneError("removing the emulated cluster needs root; run as root")
    if state_path(prefix).exists():
        remove_state(prefix)
        removed.append(f"state {state_path(prefix)}")
    return removed


@contextlib.contextmanager
def emulated_cluster(spec: EmulatedCluster, *, replace: bool = False) -> Iterator[ClusterState]:
    """Bring a cluster up for the ``with`` block; always tear it down (also on Ctrl-C)."""
    state = up(spec, replace=replace)
    try:
        yield state
    finally:
        down(spec.prefix)
