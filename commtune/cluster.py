"""Cluster descriptions: topology, links, per-stream caps and compute device.

A :class:`ClusterSpec` is built from a named preset (``commtune/data/
clusters.yaml``), from flags (``--bw 32gbit --nodes 16``) or from a cluster
file (a hand-written description or the calibration file written by
``commtune probe``). All rates are bytes/s, all times seconds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from commtune.errors import CommtuneError, did_you_mean
from commtune.io import read_text
from commtune.units import format_bandwidth, format_time, parse_bandwidth, parse_duration

CLUSTER_FORMAT = "commtune-cluster/1"
RATES = ("inter_bw_Bps", "per_stream_Bps", "intra_bw_Bps")


@dataclass(frozen=True)
class ClusterSpec:
    """A data-parallel cluster as the simulator sees it.

    ``per_stream_Bps`` is the most one flow (stream / communicator) reaches;
    ``math.inf`` means a single flow can fill the link. ``launch_overhead_s``
    is paid per collective call per stream; ``coord_msg_s`` is the cost of one
    control message handled by a rank-0 coordinator.

    Pipelining of one stream's collectives and host work around them (defaults
    reproduce the plain model: one collective per stream at a time, no host
    cost; see ``simulators.system`` for the formulas):

    * ``inflight_per_stream``: collectives one stream (communicator / process
      group) runs at once. 1 = strict FIFO (an NCCL communicator on one CUDA
      stream); 2 = gloo (``ProcessGroupGloo`` runs collectives on 2 worker
      threads by default). With m >= 2 a buffer starts once buffer j-m has
      finished, and its latency part overlaps the previous buffer's transfer.
    * ``buffer_gap_s``: the part of a buffer's fixed cost that does *not*
      overlap the previous buffer's transfer (the link idles that long between
      two back-to-back buffers); it only matters with m >= 2 or when it exceeds
      the latency part.
    * ``host_pre_s_per_byte``: host time per gradient byte before a buffer's
      all-reduce can start (DDP's comm hook dividing / casting the bucket,
      Horovod's copy into the fusion buffer); it delays the dispatch.
    * ``host_post_s_per_byte``: host time per gradient byte after a buffer's
      all-reduce (copy back into the gradients), done by one thread in buffer
      order; for static fusion (DDP) no earlier than the end of backward, where
      DDP's ``finalize_backward`` does it.

    Costs on the GPU/framework side (all default to 0 = the plain model;
    presets take their device class's defaults from ``devices.yaml``; see
    ``simulators.system`` for the formulas):

    * ``bucket_cost_s``: per fused buffer, the hook, copy and kernel launch
      that run on the training thread; it delays the buffer's start and, for
      buffers launched while backward runs, the rest of backward.
    * ``comm_sm_share``: the fraction of the GPU's SMs a collective's NCCL
      kernels hold while it runs (channels / SMs; one CTA per channel, one
      SM each); backward loses that share of each collective's duration
      ``a + b*S``, for buffers launched during backward.
    * ``comm_gpu_s_per_byte``: backward time lost per byte a collective
      reduces (the GPU's reduction and copy work; independent of the
      network's speed), for buffers launched during backward.
    * ``tensor_hook_s``: per gradient tensor, the autograd hook that marks it
      ready (DDP's reducer, Horovod's allreduce op), on backward.
    * ``step_overhead_s``: per step, the framework's fixed cost (DDP's
      reducer prepare/finalize), paid even on one GPU.
    * ``last_bucket_delay_s``: with more than one rank, the time between the
      end of backward and the start of the last buffer's all-reduce (every
      rank's end-of-backward work in the framework, and the last rank to get
      there); hidden while earlier buffers still hold the network. Fitted by
      the probe's DDP calibration run (``commtune.probe.ddp_calib``).
    * ``rank_skew``: with more than one rank, how much slower the slowest
      rank computes than the mean (GPU clock and thermal spread); every
      collective waits for it, so forward and backward stretch by
      ``1 + rank_skew``.
    * ``collective_jitter_s``: with more than one rank, the spread (standard
      deviation) of the moment the ranks launch one collective; a collective
      runs only once its slowest rank has launched it, so each one waits the
      expected maximum of n such delays, ``jitter*sqrt(2 ln n)`` (Gaussian
      extreme-value bound), on top of its ``a + b*S``: a cost per collective
      that grows with the rank count (``simulators.system``).
    * ``unit_host_s`` and ``unit_host_s_per_byte``: per sharded collective
      (all-gather, re-gather, reduce-scatter of one FSDP unit), the
      framework's host work around it (copy-in and copy-out of the unit's
      flat buffer, its hooks) before the link takes the next one; with the
      unit's bytes S, ``unit_host_s + unit_host_s_per_byte*S`` is added to
      the collective's time (``simulators.sharded``). Fitted by the probe's
      FSDP calibration run (``commtune.probe.fsdp_calib``).
    * ``nccl_tree``: NCCL may pick its tree all-reduce (NCCL >= 2.4) for a
      buffer when the tuning model says it is faster than the ring.
    * ``response_cache``: Horovod's response cache (>= 0.16.2, on by
      default): in steady state a ``central`` negotiation round is a
      bit-vector all-reduce, not ``2(n-1)`` messages at rank 0.
    * ``loop_waits``: the dynamic-fusion background loop performs its
      collectives before its next cycle (a synchronous loop, as assumed for
      the 2017-2018 Horovod of its paper); the next cycle starts when the
      last collective ends, so tensors ready meanwhile fuse into one buffer.
      False: the loop only enqueues them (Horovod with a finalizer thread).
    """

    nodes: int = 16
    gpus_per_node: int = 8
    inter_bw_Bps: float = 4e9
    per_stream_Bps: float = math.inf
    inter_latency_s: float = 30e-6
    intra_bw_Bps: float = 130e9
    intra_latency_s: float = 5e-6
    launch_overhead_s: float = 10e-6
    coord_msg_s: float = 5e-6
    inflight_per_stream: int = 1
    buffer_gap_s: float = 0.0
    host_pre_s_per_byte: float = 0.0
    host_post_s_per_byte: float = 0.0
    bucket_cost_s: float = 0.0
    comm_sm_share: float = 0.0
    comm_gpu_s_per_byte: float = 0.0
    tensor_hook_s: float = 0.0
    step_overhead_s: float = 0.0
    last_bucket_delay_s: float = 0.0
    rank_skew: float = 0.0
    collective_jitter_s: float = 0.0
    unit_host_s: float = 0.0
    unit_host_s_per_byte: float = 0.0
    nccl_tree: bool = False
    response_cache: bool = False
    loop_waits: bool = False
    device: str = "V100"
    name: str = "custom"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        from commtune.limits import RANGES

        for name in ("nodes", "gpus_per_node"):
            RANGES[name].check(getattr(self, name), name)
        RANGES["world_size"].check(self.nodes * self.gpus_per_node, "world size")
        if not isinstance(self.inflight_per_stream, int) or isinstance(self.inflight_per_stream, bool) \
                or not 1 <= self.inflight_per_stream <= 64:
            raise CommtuneError(f"inflight_per_stream must be an integer in [1, 64], got {self.inflight_per_stream!r}")
        for name in RATES:  # math.inf = unlimited (API and calibrations); files and flags are range-checked
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise CommtuneError(f"{name} must be a positive rate in bytes/s, got {v!r}")
        for name in ("inter_latency_s", "intra_latency_s", "launch_overhead_s", "coord_msg_s", "buffer_gap_s"):
            RANGES["latency"].check(getattr(self, name), name)
        for name in ("host_pre_s_per_byte", "host_post_s_per_byte", "unit_host_s_per_byte"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v <= 1e-3):
                raise CommtuneError(f"{name} must be a time per byte in [0, 0.001] s, got {v!r}")
        for name in ("bucket_cost_s", "tensor_hook_s", "step_overhead_s", "last_bucket_delay_s",
                     "comm_gpu_s_per_byte", "collective_jitter_s", "unit_host_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v >= 0 and math.isfinite(v)):
                raise CommtuneError(f"{name} must be a non-negative time in seconds, got {v!r}")
        for name in ("comm_sm_share", "rank_skew"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise CommtuneError(f"{name} must be a fraction in [0, 1], got {v!r}")
        for name in ("nccl_tree", "response_cache", "loop_waits"):
            if not isinstance(getattr(self, name), bool):
                raise CommtuneError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        cap = "" if math.isinf(self.per_stream_Bps) else f", {format_bandwidth(self.per_stream_Bps)} per stream"
        return (
            f"{self.nodes}x{self.gpus_per_node} {self.device}, {format_bandwidth(self.inter_bw_Bps)} "
            f"per node{cap}, alpha {format_time(self.inter_latency_s)} ({self.name})"
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("meta")
        if math.isinf(d["per_stream_Bps"]):
            d["per_stream_Bps"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "cluster") -> "ClusterSpec":
        """Build from a mapping; accepts ``*_Bps``/``*_s`` numbers or strings
        such as ``inter_bw: 32gbit``, ``inter_latency: 30us``."""
        known = {f.name for f in dataclasses.fields(cls)} - {"meta"}
        aliases = {
            "inter_bw": ("inter_bw_Bps", parse_bandwidth),
            "bw": ("inter_bw_Bps", parse_bandwidth),
            "per_stream": ("per_stream_Bps", parse_bandwidth),
            "intra_bw": ("intra_bw_Bps", parse_bandwidth),
            "inter_latency": ("inter_latency_s", parse_duration),
            "latency": ("inter_latency_s", parse_duration),
            "intra_latency": ("intra_latency_s", parse_duration),
            "launch_overhead": ("launch_overhead_s", parse_duration),
            "coord_msg": ("coord_msg_s", parse_duration),
            "buffer_gap": ("buffer_gap_s", parse_duration),
            "bucket_cost": ("bucket_cost_s", parse_duration),
            "tensor_hook": ("tensor_hook_s", parse_duration),
            "step_overhead": ("step_overhead_s", parse_duration),
            "last_bucket_delay": ("last_bucket_delay_s", parse_duration),
            "unit_host": ("unit_host_s", parse_duration),
        }
        kwargs: dict[str, Any] = {}
        meta = {}
        for key, value in d.items():
            if key in ("format", "description", "fit", "measurements", "burst_measurements", "host_measurements",
                       "ddp_calibration_measurements", "ddp_tail_measurements", "collective_measurements",
                       "fsdp_calibration_measurements",
                       "pilot_measurements", "provenance", "intra"):
                meta[key] = value
                continue
            if key in aliases:
                target, parse = aliases[key]
                kwargs[target] = math.inf if value is None else parse(value, what=f"{where}: {key}")
            elif key in known:
                if key == "per_stream_Bps" and value is None:
                    value = math.inf
                kwargs[key] = value
            else:
                raise CommtuneError(
                    f"{where}: unknown key {key!r}; accepted: {', '.join(sorted(known | set(aliases)))}"
                )
        if "intra" in d and d["intra"] is not None:
            ib, il = intra_preset(str(d["intra"]))
            kwargs.setdefault("intra_bw_Bps", ib)
            kwargs.setdefault("intra_latency_s", il)
        from commtune.limits import RANGES

        for name in RATES:  # numbers written in a file: a sane range (None/inf = unlimited)
            v = kwargs.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v != math.inf:
                RANGES["bandwidth"].check(v, f"{where}: {name}")
        try:
            return cls(meta=meta, **kwargs)
        except CommtuneError as exc:
            raise CommtuneError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise CommtuneError(f"{where}: {exc}") from None


@lru_cache(maxsize=1)
def preset_catalog() -> dict[str, Any]:
    text = resources.files("commtune.data").joinpath("clusters.yaml").read_text()
    return yaml.safe_load(text)


def preset_names() -> list[str]:
    return list(preset_catalog()["networks"])


def intra_preset(name: str) -> tuple[float, float]:
    """Return (bandwidth bytes/s, latency s) of an intra-node preset."""
    intra = preset_catalog()["intra"]
    if name not in intra:
        raise CommtuneError(
            f"unknown intra-node preset {name!r}{did_you_mean(name, list(intra))}; choose one of: {', '.join(intra)}"
        )
    p = intra[name]
    return parse_bandwidth(p["bw"]), parse_duration(p["latency"])


def intra_preset_names() -> list[str]:
    return list(preset_catalog()["intra"])


def preset(name: str, nodes: int = 16, gpus_per_node: int = 8) -> ClusterSpec:
    """A named network preset at the given size."""
    nets = preset_catalog()["networks"]
    if name not in nets:
        raise CommtuneError(
            f"unknown cluster preset {name!r}{did_you_mean(name, list(nets))}; choose one of: {', '.join(nets)}"
        )
    d = dict(nets[name])
    d.update(nodes=nodes, gpus_per_node=gpus_per_node, name=name)
    return with_device_defaults(ClusterSpec.from_dict(d, where=f"preset {name}"), keep=set(d))


def with_device_defaults(spec: ClusterSpec, keep: set[str] = frozenset()) -> ClusterSpec:
    """``spec`` with its device class's framework costs (``devices.yaml``
    ``framework:``: bucket cost, SM share, hooks, step overhead, NCCL tree,
    response cache), except the fields named in ``keep``."""
    from commtune.devices import framework_defaults

    d = {k: v for k, v in framework_defaults(spec.device).items() if k not in keep}
    return dataclasses.replace(spec, **d) if d else spec


def preset_for_bandwidth(bw_Bps: float) -> str | None:
    """The first preset whose link rate equals ``bw_Bps`` (so ``--bw 32gbit``
    picks up the 32 Gbit/s VPC's per-stream cap), or None."""
    for name, d in preset_catalog()["networks"].items():
        if math.isclose(parse_bandwidth(d["inter_bw"]), bw_Bps, rel_tol=1e-9):
            return name
    return None


def read_cluster_doc(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a cluster or calibration file (YAML or JSON), format checked."""
    p = Path(path)
    text = read_text(p, "cluster file")
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise CommtuneError(f"cluster file {str(p)!r} is not valid YAML/JSON: {first}") from None
    if not isinstance(data, dict):
        raise CommtuneError(f"cluster file {str(p)!r} must hold a mapping of keys such as inter_bw, nodes")
    fmt = data.get("format", CLUSTER_FORMAT)
    if fmt != CLUSTER_FORMAT:
        raise CommtuneError(f"cluster file {str(p)!r} has format {fmt!r}; this commtune reads {CLUSTER_FORMAT!r}")
    return dict(data)


def load_cluster_file(path: str | os.PathLike) -> ClusterSpec:
    """Read a cluster description or calibration file (YAML or JSON)."""
    p = Path(path)
    data = read_cluster_doc(p)
    if "preset" in data:
        from commtune.limits import RANGES

        sizes = {}
        for key, default in (("nodes", 16), ("gpus_per_node", 8)):
            sizes[key] = RANGES[key].check(data.get(key, default), f"cluster file {str(p)!r}: {key}")
        base = preset(str(data.pop("preset")), sizes["nodes"], sizes["gpus_per_node"])
        merged = base.to_dict()
        merged.update(data)
        data = merged
    data.setdefault("name", p.stem)
    return ClusterSpec.from_dict(data, where=f"cluster file {str(p)!r}")


def save_cluster_file(spec: ClusterSpec, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write a cluster file atomically (``extra`` e.g. the calibration fit)."""
    from commtune.io import atomic_write_text

    d = {"format": CLUSTER_FORMAT, **spec.to_dict(), **(extra or {})}
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))


def make_cluster(
    *,
    cluster: str | None = None,
    bw: str | None = None,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    per_stream: str | None = None,
    latency: str | None = None,
    intra: str | None = None,
    device: str | None = None,
) -> ClusterSpec:
    """Build the cluster from CLI-style options.

    ``cluster`` is a preset name or a file. ``bw`` alone picks the preset with
    that link rate (and so its per-stream cap), else a plain link with no cap.
    ``per_stream='none'`` removes a cap. Explicit options override the base.
    """
    from_file = bool(cluster) and (os.path.sep in cluster or Path(cluster).suffix in (".yaml", ".yml", ".json")
                                   or Path(cluster).exists())
    if from_file:
        base = load_cluster_file(cluster)
    elif cluster:
        base = preset(cluster)
    elif bw is not None:
        bw_Bps = parse_bandwidth(bw, what="--bw")
        name = preset_for_bandwidth(bw_Bps)
        base = preset(name) if name else with_device_defaults(
            dataclasses.replace(ClusterSpec(), inter_bw_Bps=bw_Bps, name=f"custom-{bw}"))
    else:
        base = preset("vpc-32gbit")
    changes: dict[str, Any] = {}
    if bw is not None:
        changes["inter_bw_Bps"] = parse_bandwidth(bw, what="--bw")
        if cluster and not math.isclose(changes["inter_bw_Bps"], base.inter_bw_Bps, rel_tol=1e-9):
            if per_stream is None and not math.isinf(base.per_stream_Bps):
                raise CommtuneError(
                    f"--bw {bw} replaces the link rate of {base.name!r} ({format_bandwidth(base.inter_bw_Bps)}) but "
                    f"its per-stream cap ({format_bandwidth(base.per_stream_Bps)}) belongs to that link: add "
                    f"--per-stream RATE (or --per-stream none), or drop --cluster")
            changes["name"] = f"{base.name}@{bw}"
    if nodes is not None:
        changes["nodes"] = nodes
    if gpus_per_node is not None:
        changes["gpus_per_node"] = gpus_per_node
    if per_stream is not None:
        changes["per_stream_Bps"] = (
            math.inf if str(per_stream).lower() in ("none", "off", "inf") else parse_bandwidth(per_stream, what="--per-stream")
        )
    if latency is not None:
        from commtune.limits import RANGES

        changes["inter_latency_s"] = RANGES["latency"].check(
            parse_duration(latency, what="--latency"), "--latency", repr(latency))
    if intra is not None:
        changes["intra_bw_Bps"], changes["intra_latency_s"] = intra_preset(intra)
    if device is not None:
        from commtune.devices import get_device

        changes["device"] = get_device(device).name
    spec = dataclasses.replace(base, **changes) if changes else base
    if device is not None and not from_file:
        spec = with_device_defaults(spec)  # a preset's framework costs follow the device class
    return spec
