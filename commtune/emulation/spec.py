"""What an emulated cluster should look like (validated, immutable)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from commtune.errors import CommtuneError
from commtune.units import format_bandwidth, parse_bandwidth, parse_duration

MIN_HOSTS = 2
MAX_HOSTS = 64
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


def check_prefix(prefix: str) -> str:
    """A namespace/state-file prefix: 1-8 lowercase letters/digits starting with a letter."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise CommtuneError(f"prefix must be 1-8 lowercase letters/digits starting with a letter, got {prefix!r}")
    return prefix


@dataclass(frozen=True)
class EmulatedCluster:
    """An emulated cluster: ``hosts`` namespaces on one bridge.

    Rates are bytes/s (``link_rate_Bps`` shapes each host's link in both
    directions; ``per_stream_Bps`` caps every TCP stream, None = no cap);
    ``latency_s`` is added one way on each host's egress (RTT = 2x).
    """

    hosts: int
    link_rate_Bps: float
    per_stream_Bps: float | None = None
    latency_s: float = 0.0
    prefix: str = "ct"
    subnet: str = "10.77.0.0/24"

    def __post_init__(self) -> None:
        if isinstance(self.hosts, bool) or not isinstance(self.hosts, int):
            raise CommtuneError(f"hosts must be an integer, got {self.hosts!r}")
        if not MIN_HOSTS <= self.hosts <= MAX_HOSTS:
            raise CommtuneError(f"hosts must be between {MIN_HOSTS} and {MAX_HOSTS}, got {self.hosts}")
        if not self.link_rate_Bps > 0:
            raise CommtuneError(f"link rate must be positive, got {self.link_rate_Bps!r} bytes/s")
        if self.per_stream_Bps is not None and not self.per_stream_Bps > 0:
            raise CommtuneError(f"per-stream cap must be positive, got {self.per_stream_Bps!r} bytes/s")
        if not 0 <= self.latency_s <= 1.0:
            raise CommtuneError(f"latency must be between 0 and 1 s, got {self.latency_s!r} s")
        check_prefix(self.prefix)
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError:
            raise CommtuneError(f"subnet must be an IPv4 network like 10.77.0.0/24, got {self.subnet!r}") from None
        if not net.is_private or net.num_addresses - 2 < self.hosts:
            raise CommtuneError(f"subnet {self.subnet} must be private and hold {self.hosts} hosts")

    @classmethod
    def parse(
        cls,
        hosts: int,
        bw: str,
        per_stream: str | None = None,
        latency: str | None = None,
        prefix: str = "ct",
    ) -> "EmulatedCluster":
        """Build from CLI-style strings (``"1gbit"``, ``"300mbit"``, ``"1ms"``)."""
        return cls(
            hosts=hosts,
            link_rate_Bps=parse_bandwidth(bw, "link rate (--bw)"),
            per_stream_Bps=parse_bandwidth(per_stream, "per-stream cap (--per-stream)") if per_stream else None,
            latency_s=parse_duration(latency, "latency (--latency)") if latency else 0.0,
            prefix=prefix,
        )

    @property
    def per_stream_exceeds_link(self) -> bool:
        return self.per_stream_Bps is not None and self.per_stream_Bps > self.link_rate_Bps

    def describe(self) -> str:
        s = f"{self.hosts} hosts, link {format_bandwidth(self.link_rate_Bps)}"
        if self.per_stream_Bps is not None:
            s += f", per-stream {format_bandwidth(self.per_stream_Bps)}"
        if self.latency_s > 0:
            s += f", one-way latency {self.latency_s * 1e6:.0f} us"
        return s

    def host_netns(self, i: int) -> str:
        return f"{self.prefix}-host{i}"

    @property
    def bridge_netns(self) -> str:
        return f"{self.prefix}-br"

    def host_address(self, i: int) -> str:
        net = ipaddress.IPv4Network(self.subnet)
        return str(net.network_address + 1 + i)
