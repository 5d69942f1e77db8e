"""Parsing and formatting of bandwidths, sizes and durations.

Internally commtune keeps bandwidth in **bytes per second** (names end in
``_Bps``), sizes in **bytes** (``_bytes``) and times in **seconds** (``_s``).

Bandwidth strings say whether they count bits or bytes:

* bits:  ``32gbit``, ``32Gbit``, ``32Gbps``, ``32Gb/s``, ``400mbit``, ``25G``
  (a bare prefix means bits, as network links are quoted)
* bytes: ``4GB/s``, ``4GBps``, ``4GiB/s``, ``4gbyte/s``

Sizes are bytes: ``25MB`` (10^6), ``64MiB`` (2^20), ``1048576``, ``512KiB``.
Prefixes are decimal (k=10^3) unless written with ``i`` (Ki=2^10).
"""
from __future__ import annotations

import math
import re

from commtune.errors import CommtuneError

_DECIMAL = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BINARY = {"k": 2.0**10, "m": 2.0**20, "g": 2.0**30, "t": 2.0**40}

_BW_RE = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*"
    r"(?P<prefix>[kKmMgGtT]?)(?P<i>i?)(?P<unit>bits?|bytes?|bps|Bps|b|B)?(?P<per>/s|ps)?\s*$"
)
_SIZE_RE = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*"
    r"(?P<prefix>[kKmMgGtT]?)(?P<i>i?)(?P<unit>[bB]|bytes?)?\s*$"
)

KiB = 2**10
MiB = 2**20
GiB = 2**30
MB = 10**6

BANDWIDTH_HELP = "a positive rate with units, e.g. 32gbit, 25Gbps, 400mbit, 25G (bits) or 4GB/s, 4GiB/s (bytes)"
SIZE_HELP = "a non-negative size in bytes, e.g. 25MB, 64MiB, 512KiB or 1048576"


def _scale(prefix: str, binary: bool) -> float:
    p = prefix.lower()
    return _BINARY[p] if binary else _DECIMAL[p]


def parse_bandwidth(text: str | float | int, what: str = "bandwidth") -> float:
    """Parse a bandwidth string into bytes per second.

    >>> parse_bandwidth("32gbit")
    4000000000.0
    >>> parse_bandwidth("4GB/s")
    4000000000.0
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise CommtuneError(f"{what} {text!r} has no unit; give {BANDWIDTH_HELP}")
    s = str(text).strip()
    m = _BW_RE.match(s)
    if not m or (m["i"] and not m["prefix"]):
        raise CommtuneError(f"malformed {what} {s!r}; give {BANDWIDTH_HELP}")
    unit = m["unit"] or ""
    per = m["per"] or ""
    if not unit and not m["prefix"]:
        raise CommtuneError(f"{what} {s!r} has no unit; give {BANDWIDTH_HELP}")
    if unit in ("b", "B") and not per and not m["prefix"]:
        raise CommtuneError(f"malformed {what} {s!r}; give {BANDWIDTH_HELP}")
    if unit in ("bit", "bits", "bps", "b", ""):
        bytes_per_unit = 1.0 / 8.0
    else:  # B, Bps, byte, bytes
        bytes_per_unit = 1.0
    if unit == "b" and not per:
        # "25Gb" alone reads as a size, not a rate; ask for /s.
        raise CommtuneError(f"malformed {what} {s!r} (did you mean {s}/s?); give {BANDWIDTH_HELP}")
    if unit == "B" and not per:
        raise CommtuneError(f"malformed {what} {s!r} (did you mean {s}/s?); give {BANDWIDTH_HELP}")
    value = float(m["num"]) * _scale(m["prefix"], bool(m["i"])) * bytes_per_unit
    if not math.isfinite(value) or value <= 0:
        raise CommtuneError(f"{what} must be positive, got {s!r}; give {BANDWIDTH_HELP}")
    from commtune.limits import RANGES

    return RANGES["bandwidth"].check(value, what, repr(s))


def parse_size(text: str | int, what: str = "size", allow_zero: bool = True) -> int:
    """Parse a size string into bytes (an int).

    >>> parse_size("64MiB")
    67108864
    >>> parse_size("25MB")
    25000000
    """
    if isinstance(text, bool):
        raise CommtuneError(f"malformed {what} {text!r}; give {SIZE_HELP}")
    if isinstance(text, int):
        value = float(text)
        shown = str(text)
    else:
        shown = str(text).strip()
        m = _SIZE_RE.match(shown)
        if not m or (m["i"] and not m["prefix"]):
            raise CommtuneError(f"malformed {what} {shown!r}; give {SIZE_HELP}")
        if m["unit"] == "b":
            raise CommtuneError(f"{what} {shown!r} is in bits; sizes are bytes, give {SIZE_HELP}")
        value = float(m["num"]) * _scale(m["prefix"], bool(m["i"]))
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise CommtuneError(f"{what} must be {bound}, got {shown!r}; give {SIZE_HELP}")
    return int(round(value))


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Parse ``1ms``, ``250us``, ``0.5s`` or a bare number of seconds into seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        shown = str(text)
    else:
        shown = str(text).strip()
        m = re.match(r"^([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|ms|us|µs|ns)?$", shown)
        if not m:
            raise CommtuneError(f"malformed {what} {shown!r}; give e.g. 1ms, 250us or 0.5s")
        value = float(m[1]) * {"s": 1.0, None: 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}[m[2]]
    if not math.isfinite(value) or value < 0:
        raise CommtuneError(f"{what} must be non-negative, got {shown!r}")
    return value


def split_list(text: str, what: str) -> list[str]:
    """Comma-separated entries, stripped; an empty entry (``32gbit,`` or
    ``a,,b``) is an error rather than silently dropped."""
    parts = [part.strip() for part in str(text).split(",")]
    if not all(parts):
        raise CommtuneError(f"{what} {text!r} has an empty entry; give values separated by single commas, "
                            f"e.g. 10gbit,32gbit")
    return parts


def format_bandwidth(bytes_per_s: float) -> str:
    """Format bytes/s as bits per second, the way links are quoted (``32 Gbit/s``)."""
    if bytes_per_s is None or math.isinf(bytes_per_s):
        return "unlimited"
    bits = bytes_per_s * 8.0
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.4g} {prefix}bit/s"
    return f"{bits:.4g} bit/s"


def format_size(n_bytes: float) -> str:
    """Format bytes with binary prefixes (``25 MiB``)."""
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.4g} {prefix}"
    return f"{int(n_bytes)} B"


def format_time(seconds: float) -> str:
    """Format seconds with a readable unit (``12.3 ms``)."""
    if seconds >= 1.0:
        return f"{seconds:.4g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g} ms"
    return f"{seconds * 1e6:.4g} µs"
