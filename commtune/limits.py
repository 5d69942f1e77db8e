"""Sane ranges of every number a user can type, defined once.

Flags, cluster files, scenarios and the work bounds (grid sizes, trials,
screening) all check against :data:`RANGES`; ``commtune --help`` and the
README list them. A value outside its range (or NaN/inf) is one
:class:`~commtune.errors.CommtuneError` line naming the value and the range.

The work bounds come from memory and time on a small machine: a grid or
screening configuration costs about :data:`BYTES_PER_CONFIG` bytes of Python
rows plus batch arrays (measured by ``tests/test_bad_inputs.py::
test_grid_memory_bound``) and the batch simulator evaluates ~200,000 or more
all-reduce configurations/s with both stream modes on one core
(``experiments/results/bench_simulator.md``), so :data:`MAX_CONFIGS`
configurations need at most ~1.5 GB and ~5 s of simulation per scenario.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable

from commtune.errors import CommtuneError

#: Memory one grid/screening configuration takes while it is built and evaluated (upper bound, bytes).
BYTES_PER_CONFIG = 1500
#: Most configurations one grid or screening may hold (memory: MAX_CONFIGS * BYTES_PER_CONFIG = 1.5 GB).
MAX_CONFIGS = 1_000_000


@dataclass(frozen=True)
class Range:
    """A closed range ``[low, high]`` (``low_open``: ``(low, high]``) of one quantity."""

    name: str
    flags: str  # where users meet it (for --help)
    low: float
    high: float
    integer: bool = False
    unit: str = ""
    low_open: bool = False
    why: str = ""
    text: str = ""  # how the range reads for users when the raw numbers do not (bandwidths)

    def describe(self) -> str:
        if self.text:
            return self.text
        lo = "(" if self.low_open else "["
        unit = f" {self.unit}" if self.unit else ""
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {lo}{_num(self.low)}, {_num(self.high)}]{unit}"

    def check(self, value: Any, what: str | None = None, shown: str | None = None) -> Any:
        """``value`` if it is in range, else a CommtuneError naming ``what`` and ``shown``."""
        label = what or self.name
        text = shown if shown is not None else _num(value) if isinstance(value, (int, float)) else repr(value)
        ok_type = isinstance(value, int) if self.integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            raise CommtuneError(f"{label} {text}: must be {self.describe()}")
        if not math.isfinite(value):
            raise CommtuneError(f"{label} {text} is not a finite number; give {self.describe()}")
        below = value <= self.low if self.low_open else value < self.low
        if below or value > self.high:
            why = f" ({self.why})" if self.why else ""
            raise CommtuneError(f"{label} {text} is out of range: give {self.describe()}{why}")
        return value

    def parse(self, text: str, what: str | None = None) -> Any:
        """Parse command-line text (an int, or any float) and check it."""
        s = str(text).strip()
        try:
            value: Any = int(s) if self.integer else float(s)
        except ValueError:
            raise CommtuneError(f"{what or self.name} {s!r}: must be {self.describe()}") from None
        return self.check(value, what, repr(s))

    def argtype(self, flag: str) -> Callable[[str], Any]:
        """An argparse ``type=``: one-line error naming the flag, the text and the range."""

        def convert(text: str) -> Any:
            try:
                return self.parse(text, flag)
            except CommtuneError as exc:
                raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None

        convert.__name__ = self.name  # argparse names the type in its own messages
        return convert


def _num(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


_R = [
    Range("nodes", "--nodes", 1, 65536, integer=True),
    Range("gpus_per_node", "--gpus-per-node", 1, 64, integer=True),
    Range("world_size", "nodes x gpus per node", 1, 2**20, integer=True, why="nodes x GPUs per node"),
    Range("batch_size", "--batch-size", 1, 65536, integer=True, unit="samples per GPU"),
    Range("input_size", "--input-size, --seq-len", 1, 65536, integer=True, unit="(image side or sequence length)"),
    Range("bandwidth", "--bw, --bws, --per-stream, cluster files", 125e3, 12.5e12, unit="bytes/s", text="a rate from 1 Mbit/s to 100 Tbit/s"),
    Range("latency", "--latency, cluster-file times", 0.0, 1.0, unit="s"),
    Range("seed", "--seed", 0, 2**32 - 1, integer=True),
    Range("trials", "--trials", 1, 10_000, integer=True, why="a study of more trials takes hours of sampler time"),
    Range("screen", "--screen", 0, MAX_CONFIGS, integer=True, why="memory and time of one batch-simulator call"),
    Range("grid_points", "--grid-points", 2, 1024, integer=True, unit="points per numeric range"),
    Range("grid_configs", "grid size (--sampler grid, plot sweep)", 1, MAX_CONFIGS, integer=True, unit="configurations",
          why=f"about {MAX_CONFIGS * BYTES_PER_CONFIG / 1e9:.1f} GB and 10 s of batch simulation"),
    Range("message_size", "probe --sizes, --burst-sizes, --host-sizes", 4, 2**31, integer=True, unit="bytes",
          why="each rank holds a buffer of this size per stream"),
    Range("heatmap_points", "plot heatmap --points", 2, 400, integer=True),
    Range("timeout", "--timeout, --live-timeout", 0.0, 7 * 86400.0, low_open=True, unit="s"),
    Range("iterations", "probe --iters, --burst-count", 1, 10_000, integer=True),
    Range("probe_budget", "probe --budget", 0.0, 86400.0, unit="s", why="0 runs the sizes as given"),
    Range("warmup", "--warmup", 0, 1000, integer=True),
    Range("ranks", "--ranks", 2, 256, integer=True),
    Range("concurrency", "--concurrency", 1, 256, integer=True),
    Range("steps", "--steps, --live-steps, --live-warmup, --confirm, probe --ddp-steps", 1, 10_000, integer=True),
    Range("scale", "--scale, --live-scale", 0.0, 1.0, low_open=True),
    Range("compute_ms", "--forward-ms, --backward-ms, --live-*-ms", 0.0, 1e6, unit="ms"),
    Range("percent", "plot fidelity --band", 0.0, 100.0, unit="%"),
    Range("passes", "validate --passes", 1, 20, integer=True, why="each pass measures every configuration live"),
    Range("repeat_noisy", "validate --repeat-noisy", 0, 20, integer=True,
          why="each extra pass measures the noisy configurations live"),
    Range("live_configs", "validate --held-out, --configs, --buckets x --streams", 2, 500, integer=True,
          unit="configurations", why="each one is measured live"),
]
RANGES: dict[str, Range] = {r.name: r for r in _R}


def check_count(name: str, count: int, what: str, shown: str | None = None) -> int:
    """A computed size (e.g. the grid's configurations) against its bound."""
    return RANGES[name].check(int(count), what, shown or f"{count:,}")


def ranges_help() -> str:
    """The ranges, one per line (``commtune --help`` adds the knobs' own from :data:`commtune.knobs.KNOBS`)."""
    return "\n".join(f"  {r.flags:<48} {r.describe()}" for r in _R)
