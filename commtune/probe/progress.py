"""Per-rank progress and heartbeat, so a launcher can name the rank that died or hung.

When ``COMMTUNE_PROBE_HB_DIR`` is set, a daemon thread writes
``<dir>/rank<R>`` = ``"<progress> <unix time>"`` every :data:`INTERVAL_S`.
``progress`` counts collective calls the rank has *entered*; a rank that hangs
outside a collective stays behind the others, which wait inside the next one.
A rank that is stopped or dead stops refreshing its heartbeat.

``COMMTUNE_PROBE_FAULT=kind:rank:step`` injects a fault for tests: at progress
``step`` rank ``rank`` is killed (``kill``, SIGKILL), exits with status 7
(``exit``) or hangs (``hang``, sleeps forever).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

HB_ENV = "COMMTUNE_PROBE_HB_DIR"
FAULT_ENV = "COMMTUNE_PROBE_FAULT"
INTERVAL_S = 0.2


class Progress:
    def __init__(self, rank: int):
        self.rank = rank
        self.count = 0
        d = os.environ.get(HB_ENV)
        self.path = Path(d) / f"rank{rank}" if d else None
        fault = os.environ.get(FAULT_ENV, "")
        self.fault = None
        if fault:
            kind, r, step = fault.split(":")
            if int(r) == rank:
                self.fault = (kind, int(step))
        if self.path is not None:
            self._write()
            threading.Thread(target=self._beat, daemon=True).start()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.count} {time.time():.3f} {os.getpid()}\n")
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        while True:
            time.sleep(INTERVAL_S)
            try:
                self._write()
            except OSError:
                return

    def tick(self) -> None:
        """Call before entering each collective."""
        self.count += 1
        if self.fault and self.count >= self.fault[1]:
            kind = self.fault[0]
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif kind == "exit":
                os._exit(7)
            elif kind == "hang":
                self.count -= 1
                while True:
                    time.sleep(3600)

    @property
    def supervised(self) -> bool:
        return self.path is not None


def read_heartbeats(directory: str | os.PathLike) -> dict[int, tuple[int, float]]:
    """``{rank: (progress, last beat unix time)}`` from a heartbeat folder."""
    out = {}
    for p in Path(directory).glob("rank*"):
        if p.suffix:
            continue
        try:
            count, t, *_ = p.read_text().split()
            out[int(p.name[4:])] = (int(count), float(t))
        except (OSError, ValueError):
            continue
    return out


def culprit(beats: dict[int, tuple[int, float]], world: int, now: float | None = None) -> tuple[int, str] | None:
    """The rank to blame for a hang, and why; None if it cannot be told."""
    now = time.time() if now is None else now
    missing = [r for r in range(world) if r not in beats]
    if missing:
        return missing[0], "never started"
    stale = sorted((t, r) for r, (_, t) in beats.items() if now - t > 5 * INTERVAL_S + 0.5)
    if stale and len(stale) < world:
        return stale[0][1], f"stopped responding {now - stale[0][0]:.1f} s ago"
    progress = {r: c for r, (c, _) in beats.items()}
    low = min(progress.values())
    behind = [r for r, c in progress.items() if c == low]
    if len(behind) == 1 and len(progress) > 1:
        return behind[0], f"hung after {low} collective calls while the others entered the next"
    return None
