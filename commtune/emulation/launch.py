"""Running one process per emulated host, with its rank's environment; no orphans."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from commtune.emulation.state import ClusterState
from commtune.errors import CommtuneError

DEFAULT_MASTER_PORT = 29500


@dataclass
class RankResult:
    """What one rank did: exit status, captured output, wall time."""

    rank: int
    host: int
    returncode: int | None
    stdout: str
    stderr: str
    elapsed_s: float


class RankFailure(CommtuneError):
    """A rank failed or timed out; ``results`` holds every rank's output so far."""

    def __init__(self, message: str, results: list[RankResult]) -> None:
        super().__init__(message)
        self.results = results


@dataclass
class _Running:
    rank: int
    host: int
    proc: subprocess.Popen[str]
    started: float
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def result(self) -> RankResult:
        for t in self.threads:
            t.join(timeout=2.0)
        return RankResult(self.rank, self.host, self.proc.returncode, "".join(self.out), "".join(self.err),
                          time.monotonic() - self.started)


def _pump(stream: TextIO, sink: list[str], echo: TextIO | None, tag: str) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
        if echo is not None:
            echo.write(f"{tag}{line}")
            echo.flush()
    stream.close()


def _kill_groups(running: list[_Running], grace_s: float = 3.0) -> None:
    """SIGTERM every live rank's process group, SIGKILL after ``grace_s``, reap all."""
    for r in running:
        if r.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for r in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for r in running:
        # The group may outlive its leader (grandchildren): always SIGKILL the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r.proc.pid, signal.SIGKILL)
        r.proc.wait()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run_on_hosts(
    state: ClusterState,
    argv_per_rank: Sequence[Sequence[str]],
    env_extra: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
    timeout_s: float = 300.0,
    *,
    hosts: Sequence[int] | None = None,
    master_port: int = DEFAULT_MASTER_PORT,
    echo: TextIO | None = None,
    cwd: str | None = None,
    abort: threading.Event | None = None,
) -> list[RankResult]:
    """Run ``argv_per_rank[r]`` as rank ``r`` inside host ``hosts[r]`` (default: host ``r``); wait for all.

    Each rank gets ``os.environ`` + ``state.env_for(r, world_size, master_port)``
    (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, GLOO_SOCKET_IFNAME, OMP_NUM_THREADS,
    LD_PRELOAD shim) + ``env_extra`` (a mapping, or a function of the rank). Each runs in
    its own process group. If a rank exits non-zero, the timeout passes, or we are
    interrupted, every group is killed (SIGTERM, then SIGKILL) and a :class:`RankFailure`
    naming the rank is raised (KeyboardInterrupt is re-raised after the kill).
    ``echo`` (e.g. ``sys.stderr``) streams output lines prefixed ``[rank N] ``.
    ``abort`` (an Event another thread sets, e.g. a per-trial watchdog): handled as the timeout.
    Returns per-rank results (stdout/stderr captured), in rank order.
    """
    world = len(argv_per_rank)
    if world == 0:
        raise CommtuneError("run_on_hosts needs at least one rank")
    placement = list(hosts) if hosts is not None else list(range(world))
    if len(placement) != world:
        raise CommtuneError(f"hosts lists {len(placement)} hosts for {world} ranks")
    bad = [h for h in placement if not 0 <= h < state.num_hosts]
    if bad:
        raise CommtuneError(f"host index {bad[0]} out of range: the cluster has {state.num_hosts} hosts")
    running: list[_Running] = []
    try:
        for rank, (argv, host) in enumerate(zip(argv_per_rank, placement)):
            env = dict(os.environ)
            env.update(state.env_for(rank, world_size=world, master_port=master_port))
            extra = env_extra(rank) if callable(env_extra) else env_extra
            env.update({k: str(v) for k, v in (extra or {}).items()})
            full = [*state.launch_prefix(host), *[str(a) for a in argv]]
            try:
                proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                                        start_new_session=True, errors="replace")
            except OSError as exc:
                raise CommtuneError(f"rank {rank}: cannot start {full[0]}: {exc}") from None
            r = _Running(rank, host, proc, time.monotonic())
            for stream, sink in ((proc.stdout, r.out), (proc.stderr, r.err)):
                t = threading.Thread(target=_pump, args=(stream, sink, echo, f"[rank {rank}] "), daemon=True)
                t.start()
                r.threads.append(t)
            running.append(r)

        deadline = time.monotonic() + timeout_s
        while True:
            failed = [r for r in running if r.proc.poll() not in (None, 0)]
            if failed:
                first = min(failed, key=lambda r: r.rank)
                _kill_groups(running)
                results = [r.result() for r in running]
                msg = (f"rank {first.rank} ({state.hosts[first.host].netns}) exited with status "
                       f"{first.proc.returncode}: {_last_line(results[first.rank].stderr)}")
                raise RankFailure(msg, results)
            if all(r.proc.returncode == 0 for r in running):
                _kill_groups(running, grace_s=0.0)  # leftovers a rank left in its group
                return [r.result() for r in running]
            if time.monotonic() > deadline or (abort is not None and abort.is_set()):
                late = [r.rank for r in running if r.proc.poll() is None]
                _kill_groups(running)
                results = [r.result() for r in running]
                when = "(stopped by the caller)" if abort is not None and abort.is_set() else f"after {timeout_s:g} s"
                raise RankFailure(f"rank {late[0]} ({state.hosts[placement[late[0]]].netns}) timed out {when} "
                                  f"(still running: ranks {', '.join(map(str, late))})", results)
            time.sleep(0.02)
    finally:
        # Any path out (exception, KeyboardInterrupt) leaves no process behind.
        if any(r.proc.poll() is None for r in running):
            _kill_groups(running)
        sys.stdout.flush()
