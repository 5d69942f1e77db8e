"""commtune's sharded simulator against published FSDP measurements (issue 26, 7(a)).

Claim: with one achieved compute rate (TFLOP/s per GPU) fitted per software stack and one
matmul tile cost ``k0`` per device class, both on calibration points only, the sharded
simulator predicts the held-out published FSDP / HSDP throughputs (other GPU counts, other
model sizes) and the measured directions.
Runs: ~2 s. Root: no.
Writes: ``experiments/results/published_sharded.{md,json,png}``.

The measurements, their hardware, shapes, quotes and the calibration / held-out split are in
``experiments/data/published_sharded.yaml`` (every number there is quoted from its source).
Each point's step time is ``batch x seq_len / (tokens/s per GPU)``. The scenario: the model
built with the zoo's Llama builder at the point's sequence length, bf16, FSDP2's defaults
(one unit per transformer block, reshard after forward, prefetch 1, fp32 reduce; HSDP with the
node as shard group where the source ran HSDP), the stated per-node bandwidth with NCCL's
per-hop latencies and the intra-node preset, and the device's framework costs
(``devices.yaml``). The linear layers declare their matmul shapes, so each matmul contracting
over K runs at ``K / (K + k0)`` of the rate (:func:`simulators.workload.matmul_time_factors`):
a cost per output element, the tile epilogue and the memory-bound elementwise work on the
matmul's output, whose share falls as 1/width. Fitted: per ``stack`` (same hardware and
software) one factor on every layer's compute time, reported as the TFLOP/s of a matmul of
infinite width; per device class ``k0``, from the stacks that calibrate on two model shapes
(IBM's 7B and 70B; the torchtitan stacks, one shape, take their device's ``k0``). 13B's
selective checkpointing recomputes half the blocks (the point's ``ac_fraction``).

Needs the sharded simulator (``simulators/sharded.py``) and the zoo's Llama models; without
them the script says which is missing in one line and exits 2.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401  (puts the repository on sys.path)

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from commtune.errors import CommtuneError  # noqa: E402
from commtune.io import read_text  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "published_sharded.yaml"
USES = ("calibration", "held_out", "excluded")
POINT_FIELDS = ("id", "source", "quote", "model", "seq_len", "cluster", "gpus", "batch_per_gpu", "precision",
                "activation_checkpointing", "sharding", "measured", "use")
MODEL_FIELDS = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "tied", "shape_source")
CLUSTER_FIELDS = ("device", "gpus_per_node", "inter_node_gbit_per_node", "intra")
#: activation checkpointing as the sources name it -> the fraction of blocks recomputed
#: (``selective-blocks``: the point's ``ac_fraction``, fms-fsdp's evenly spaced rule)
AC_RECOMPUTE = {"none": 0.0, "full": 1.0, "selective-op": 0.0, "selective-blocks": None}
#: the range the per-device matmul tile cost is fitted in (contraction steps)
K0_BOUNDS = (0.0, 65536.0)
#: NCCL's ring Simple latencies (src/graph/tuning.cc, as experiments/published_benchmarks.py): network hop, base
NET_HOP_S, LAUNCH_S = 9.6e-6, 8.4e-6
MAX_SEQ = 8192

NOT_EXPRESSIBLE = [
    "torchtitan's selective op activation checkpointing (recomputes some ops of every block): modelled as no "
    "recomputation; fms-fsdp's selective (13B rows): half the blocks, read from the table's HFU/MFU",
    "torch.compile: no knob; the compiled rows are their own stack with their own fitted compute",
    "Float8 compute and float8 all-gather (torchtitan, H200): no fp8 throughput or 1-byte wire parameters",
    "FSDP1 (fms-fsdp, IBM) vs FSDP2 (torchtitan): the same per-block timeline and FSDP2's defaults for both",
    "The IBM table's '400Gbps' / '800Gbps inter-node interconnect': read as per node (the source does not say)",
    "T5 (IBM Cloud study) is not in the zoo; its sequence length and the GPU count of the 20 % point are not stated",
    "The torchtitan H100s run at a 500 W power limit with HBM2e (not the H100 SXM5 preset): covered by the fit",
]


def load_data(path: Path = DATA) -> dict:
    """The measurements file, checked: every point names its source and quote, a known model and
    cluster (unless excluded, with a reason), and a split in :data:`USES`. One-line errors."""
    data = yaml.safe_load(read_text(path, what="published measurements"))
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise CommtuneError(f"{path}: expected a mapping with a 'points' list")
    sources, models, clusters = (data.get(k) or {} for k in ("sources", "models", "clusters"))
    for name, m in models.items():
        missing = [f for f in MODEL_FIELDS if f not in m]
        if missing:
            raise CommtuneError(f"{path}: model {name!r} lacks {', '.join(missing)}")
    for name, c in clusters.items():
        missing = [f for f in CLUSTER_FIELDS if f not in c]
        if missing:
            raise CommtuneError(f"{path}: cluster {name!r} lacks {', '.join(missing)}")
    seen = set()
    for p in data["points"]:
        pid = p.get("id", "?")
        missing = [f for f in POINT_FIELDS if f not in p]
        if missing:
            raise CommtuneError(f"{path}: point {pid!r} lacks {', '.join(missing)}")
        if pid in seen:
            raise CommtuneError(f"{path}: point id {pid!r} appears twice")
        seen.add(pid)
        if p["source"] not in sources or not sources[p["source"]].get("url"):
            raise CommtuneError(f"{path}: point {pid!r} cites {p['source']!r}, not a source with a url")
        if p["use"] not in USES:
            raise CommtuneError(f"{path}: point {pid!r} use {p['use']!r}; choose one of: {', '.join(USES)}")
        m = p["measured"]
        if not (isinstance(m, dict) and isinstance(m.get("value"), (int, float)) and m["value"] > 0 and m.get("metric")):
            raise CommtuneError(f"{path}: point {pid!r} needs measured.metric and a positive measured.value")
        if p["use"] == "excluded":
            if not p.get("exclude_reason"):
                raise CommtuneError(f"{path}: excluded point {pid!r} needs an exclude_reason")
            continue
        if m["metric"] != "tokens_per_s_per_gpu" or not p.get("stack"):
            raise CommtuneError(f"{path}: point {pid!r} needs metric tokens_per_s_per_gpu and a stack")
        if p["model"] not in models or p["cluster"] not in clusters:
            raise CommtuneError(f"{path}: point {pid!r} names model {p['model']!r} / cluster {p['cluster']!r} "
                                f"not defined in the file")
        if p["activation_checkpointing"] not in AC_RECOMPUTE:
            raise CommtuneError(f"{path}: point {pid!r} activation_checkpointing {p['activation_checkpointing']!r}; "
                                f"choose one of: {', '.join(AC_RECOMPUTE)}")
        if p["activation_checkpointing"] == "selective-blocks":
            f = p.get("ac_fraction")
            if isinstance(f, bool) or not (isinstance(f, (int, float)) and 0 <= f <= 1):
                raise CommtuneError(f"{path}: point {pid!r} ac_fraction {f!r}; accepted: the fraction of blocks "
                                    f"recomputed, a number in [0, 1] (needed by selective-blocks)")
        if p["sharding"] not in (data.get("shardings") or {}):
            raise CommtuneError(f"{path}: point {pid!r} sharding {p['sharding']!r} is not in 'shardings'")
        if not (isinstance(p["seq_len"], int) and 1 <= p["seq_len"] <= MAX_SEQ):
            raise CommtuneError(f"{path}: point {pid!r} seq_len {p['seq_len']!r}; accepted: an integer 1..{MAX_SEQ}")
        gpn = clusters[p["cluster"]]["gpus_per_node"]
        if not (isinstance(p["gpus"], int) and p["gpus"] >= gpn and p["gpus"] % gpn == 0):
            raise CommtuneError(f"{path}: point {pid!r} gpus {p['gpus']!r}; accepted: a multiple of {gpn}")
    stacks = {}
    for p in data["points"]:
        if p["use"] != "excluded":
            stacks.setdefault(p["stack"], set()).add(p["use"])
    lacking = [s for s, uses in stacks.items() if "calibration" not in uses]
    if lacking:
        raise CommtuneError(f"{path}: stack(s) {', '.join(lacking)} have held-out points but no calibration point")
    return data


def split(data: dict) -> dict[str, list[dict]]:
    """The points by ``use`` (calibration, held_out, excluded), in file order."""
    return {u: [p for p in data["points"] if p["use"] == u] for u in USES}


def missing_requirement() -> str | None:
    """None when the sharded simulator and the zoo's Llama builder import, else the one line to print."""
    try:
        import simulators.sharded  # noqa: F401
    except ImportError:
        return "needs the sharded simulator (simulators/sharded.py, issue 26 part 1)"
    from commtune.models import zoo

    if not hasattr(zoo, "_llama") or not hasattr(zoo, "_LlamaConfig"):
        return "needs the zoo's Llama models (commtune.models.zoo Llama builder, issue 26 part 1)"
    return None


def build_model(data: dict, name: str, seq: int):
    """The point's model at ``seq`` tokens, built with the zoo's Llama builder from the file's shape,
    its linear layers declaring their matmul shapes (:attr:`Layer.matmul`); a model the file
    names as a zoo entry must have the zoo entry's parameters."""
    from commtune.models import ModelProfile, load_model
    from commtune.models.zoo import _llama, _LlamaConfig

    m = data["models"][name]
    cfg = _LlamaConfig(m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["ffn"], m["vocab"], seq, m["tied"])
    profile = ModelProfile(name=name, layers=tuple(_llama(cfg, seq, matmul_shapes=True)),
                           input_desc=f"sequence length {seq}",
                           meta={"family": "text", "input_size": seq, "source": "published_sharded.yaml"})
    if m.get("zoo") and load_model(m["zoo"], seq).num_params != profile.num_params:
        raise CommtuneError(f"model {name}: the file's shape does not build zoo {m['zoo']!r}")
    if m.get("params") is not None and profile.num_params != m["params"]:
        raise CommtuneError(f"model {name}: {profile.num_params:,} parameters built, the file says {m['params']:,}")
    return profile


def cluster_for(data: dict, point: dict, inter_gbit: float | None = None):
    """The point's cluster: stated per-node bandwidth, NCCL hop latencies, the intra preset,
    the device's framework costs (``devices.yaml``)."""
    from commtune.cluster import ClusterSpec, intra_preset
    from commtune.devices import framework_defaults

    c = data["clusters"][point["cluster"]]
    intra_bw, intra_lat = intra_preset(c["intra"])
    gbit = c["inter_node_gbit_per_node"] if inter_gbit is None else inter_gbit
    return ClusterSpec(
        nodes=point["gpus"] // c["gpus_per_node"], gpus_per_node=c["gpus_per_node"], inter_bw_Bps=gbit * 1e9 / 8,
        per_stream_Bps=math.inf, inter_latency_s=NET_HOP_S, intra_bw_Bps=intra_bw, intra_latency_s=intra_lat,
        launch_overhead_s=LAUNCH_S, device=c["device"], name=point["cluster"], **framework_defaults(c["device"]))


def knobs_for(data: dict, point: dict, **overrides):
    """FSDP2's defaults with the point's sharding (fp32 reduce, the node as HSDP shard group)."""
    from commtune.knobs import FSDP2_DEFAULT

    base = dict(sharding=data["shardings"][point["sharding"]]["sharding"], reduce_precision="fp32")
    return dataclasses.replace(FSDP2_DEFAULT, **{**base, **overrides})


_WORKLOADS: dict[tuple, object] = {}


def recompute_fraction(point: dict) -> float:
    """The fraction of blocks the point's activation checkpointing recomputes."""
    f = AC_RECOMPUTE[point["activation_checkpointing"]]
    return float(point["ac_fraction"]) if f is None else f


_MODELS: dict[tuple, object] = {}


def workload_for(data: dict, point: dict, batch: int | None = None, k0: float = 0.0):
    """The point's per-GPU workload at the device preset's bf16 rate, matmuls at tile cost ``k0``
    (contraction steps, :func:`simulators.workload.matmul_time_factors`); cached."""
    from simulators import build_workload

    key = (point["id"], batch, k0)
    if key not in _WORKLOADS:
        if len(_WORKLOADS) > 4096:
            _WORKLOADS.clear()
        mkey = (point["model"], point["seq_len"])
        if mkey not in _MODELS:
            _MODELS[mkey] = build_model(data, *mkey)
        device = data["clusters"][point["cluster"]]["device"]
        _WORKLOADS[key] = build_workload(
            _MODELS[mkey], device, batch_size=batch or point["batch_per_gpu"], precision="bf16",
            activation_checkpointing=recompute_fraction(point), matmul_k0=k0)
    return _WORKLOADS[key]


def with_compute_scale(w, k: float):
    """``w`` with every layer's forward and backward time times ``k`` (the optimizer is memory-bound, kept)."""
    return dataclasses.replace(
        w, forward_s=w.forward_s * k, backward_s=w.backward_s * k, ready_s=w.ready_s * k,
        layer_forward_s=w.layer_forward_s * k, layer_backward_s=w.layer_backward_s * k,
        layer_backward=tuple((n, a * k, b * k) for n, a, b in w.layer_backward))


def predict(data: dict, point: dict, k: float, inter_gbit: float | None = None, batch: int | None = None,
            k0: float = 0.0, **knobs) -> dict:
    """Simulated step of ``point`` with compute scale ``k`` and matmul tile cost ``k0``: step time,
    tokens/s per GPU, and the communication left exposed beyond forward, backward and the sharded
    optimizer."""
    from simulators import Simulator

    w = workload_for(data, point, batch, k0)
    cluster = cluster_for(data, point, inter_gbit)
    r = Simulator(with_compute_scale(w, k), cluster).run(knobs_for(data, point, **knobs))
    b = batch or point["batch_per_gpu"]
    return {"step_time_s": r.step_time_s, "tokens_per_s_per_gpu": b * point["seq_len"] / r.step_time_s,
            "compute_s": r.forward_s + r.backward_s + r.optimizer_s,
            "exposed_comm_s": r.step_time_s - r.forward_s - r.backward_s - r.optimizer_s, "units": r.num_buffers,
            "scaling_efficiency": r.scaling_efficiency}


def measured_step_s(point: dict) -> float:
    return point["batch_per_gpu"] * point["seq_len"] / point["measured"]["value"]


def _log_err(data: dict, points: list[dict], k: float, k0: float) -> float:
    return sum(math.log(predict(data, p, k, k0=k0)["step_time_s"] / measured_step_s(p)) ** 2 for p in points)


def fit_stack(data: dict, points: list[dict], k0: float = 0.0) -> float:
    """The compute scale ``k`` of one stack at matmul tile cost ``k0``: least squares of the log
    step-time ratio over its calibration points (bounded scalar search; the step grows
    monotonically with ``k``)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda logk: _log_err(data, points, math.exp(logk), k0),
                          bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return math.exp(res.x)


def fit_device(data: dict, by_stack: dict[str, list[dict]]) -> tuple[float, dict[str, float]]:
    """One device's matmul tile cost ``k0`` (:data:`K0_BOUNDS`) and each of its stacks' compute
    scale, by least squares over the stacks' calibration points (each stack's scale refitted at
    every ``k0``). ``k0`` is 0 unless some stack calibrates on two or more model shapes: one
    shape cannot tell a tile cost from the rate."""
    from scipy.optimize import minimize_scalar

    shaped = any(len({p["model"] for p in pts}) > 1 for pts in by_stack.values())
    if not shaped:
        return 0.0, {s: fit_stack(data, pts) for s, pts in by_stack.items()}

    def loss(k0: float) -> float:
        return sum(_log_err(data, pts, fit_stack(data, pts, k0), k0) for pts in by_stack.values())

    k0 = float(minimize_scalar(loss, bounds=K0_BOUNDS, method="bounded", options={"xatol": 1.0}).x)
    return k0, {s: fit_stack(data, pts, k0) for s, pts in by_stack.items()}


def fit_all(data: dict, calibration: list[dict]) -> dict[str, tuple[float, float]]:
    """Each stack's ``(k, k0)``: :func:`fit_device` per device class over its stacks' calibration points."""
    by_device: dict[str, dict[str, list[dict]]] = {}
    for p in calibration:
        device = data["clusters"][p["cluster"]]["device"]
        by_device.setdefault(device, {}).setdefault(p["stack"], []).append(p)
    out = {}
    for stacks in by_device.values():
        k0, ks = fit_device(data, stacks)
        out.update({s: (k, k0) for s, k in ks.items()})
    return out


def rows_for(data: dict, points: list[dict], scales: dict[str, tuple[float, float]]) -> list[dict]:
    from commtune.devices import get_device

    rows = []
    for p in points:
        k, k0 = scales[p["stack"]]
        pr = predict(data, p, k, k0=k0)
        device = data["clusters"][p["cluster"]]["device"]
        rows.append({"id": p["id"], "source": p["source"], "model": p["model"], "gpus": p["gpus"],
                     "stack": p["stack"], "use": p["use"], "measured_tps": p["measured"]["value"],
                     "predicted_tps": pr["tokens_per_s_per_gpu"], "measured_step_s": measured_step_s(p),
                     "predicted_step_s": pr["step_time_s"], "exposed_comm_s": pr["exposed_comm_s"],
                     "units": pr["units"], "achieved_tflops": get_device(device).tflops["bf16"] / k})
    return rows


def summary(rows: list[dict]) -> dict:
    err = [abs(r["predicted_tps"] / r["measured_tps"] - 1) for r in rows]
    return {"points": len(rows), "mape_pct": 100 * float(np.mean(err)) if err else None,
            "worst_pct": 100 * float(np.max(err)) if err else None}


def directions(data: dict, scales: dict[str, tuple[float, float]], rows: list[dict]) -> list[dict]:
    """The sources' measured directions and the knob directions, measured / stated vs simulated."""
    by_id = {p["id"]: p for p in data["points"]}
    pred = {r["id"]: r["predicted_tps"] for r in rows}
    out = []
    for a, b in (("titan-h100-8b-8gpu", "titan-h100-8b-128gpu"),
                 ("titan-h100-8b-8gpu-compile", "titan-h100-8b-128gpu-compile")):
        m = by_id[b]["measured"]["value"] < by_id[a]["measured"]["value"]
        out.append({"effect": f"tokens/s per GPU falls from 8 to 128 GPUs ({by_id[a]['stack']})", "source": "titan-h100",
                    "measured": m, "predicted": pred[b] < pred[a], "same_direction": (pred[b] < pred[a]) == m})
    sizes = ["ibm-a100-7b", "ibm-a100-13b", "ibm-a100-34b", "ibm-a100-70b"]
    p_mono = all(pred[x] > pred[y] for x, y in zip(sizes, sizes[1:]))
    out.append({"effect": "tokens/s per GPU falls 7B -> 13B -> 34B -> 70B (A100)", "source": "ibm-max",
                "measured": True, "predicted": p_mono, "same_direction": p_mono})
    try:
        from simulators.memory import peak_memory
    except ImportError:
        peak_memory = None
    if peak_memory is not None:
        mem = {}
        for pid in ("titan-h100-8b-8gpu", "titan-h100-8b-128gpu"):
            p = by_id[pid]
            model = build_model(data, p["model"], p["seq_len"])
            mem[pid] = peak_memory(model, knobs_for(data, p), world_size=p["gpus"], gpus_per_node=8,
                                   batch_size=p["batch_per_gpu"], precision="bf16").allocated / 2**30
        out.append({"effect": "peak memory per GPU falls from 8 to 128 GPUs (GiB; measured 82.4 -> 67.0)",
                    "source": "titan-h100", "measured": [82.4, 67.0],
                    "predicted": [round(v, 1) for v in mem.values()],
                    "same_direction": mem["titan-h100-8b-128gpu"] < mem["titan-h100-8b-8gpu"]})
    # Knob directions on a held-out scenario (torchtitan, 128 H100): stated by the sources in the comments.
    p, (k, k0) = by_id["titan-h100-8b-128gpu"], scales["titan-h100-eager"]
    base = predict(data, p, k, k0=k0)["step_time_s"]
    slow = predict(data, p, k, inter_gbit=100, k0=k0)["step_time_s"]
    out.append({"effect": "less inter-node bandwidth is slower (3200 -> 100 Gbit/s per node)",
                "source": "ZeRO++ blog: ZeRO-3's throughput needs 4x the bandwidth ZeRO++ needs",
                "measured": True, "predicted": slow > base, "same_direction": slow > base,
                "step_ms": [round(1e3 * base, 1), round(1e3 * slow, 1)]})
    keep = predict(data, p, k, inter_gbit=100, k0=k0, reshard_after_forward=False)["step_time_s"]
    out.append({"effect": "reshard_after_forward false is not slower (no backward re-gather; at 100 Gbit/s)",
                "source": "fairseq FSDP README: '--no-reshard-after-forward: increases training speed'",
                "measured": True, "predicted": keep <= slow, "same_direction": keep <= slow,
                "step_ms": [round(1e3 * slow, 1), round(1e3 * keep, 1)]})
    none = predict(data, p, k, inter_gbit=100, k0=k0, forward_prefetch=0, backward_prefetch=0)["step_time_s"]
    out.append({"effect": "no prefetch is slower than prefetch 1 (at 100 Gbit/s)",
                "source": "IBM/Meta blog: overlapping the gathers with compute improves GPU utilization by nearly 2x",
                "measured": True, "predicted": none > slow, "same_direction": none > slow,
                "step_ms": [round(1e3 * slow, 1), round(1e3 * none, 1)]})
    return out


def size_effect(data: dict, scales: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """Per device class: the fitted ``k0``, the matmul efficiency ``K/(K+k0)`` at K = 4096 and 8192
    (7B's and 70B's width), and ``k0`` as memory traffic: the bytes per output element that
    ``2·k0`` FLOPs at the stack's rate take at the device's memory bandwidth (``devices.yaml``)."""
    from commtune.devices import get_device

    shapes: dict[str, set] = {}
    for p in data["points"]:
        if p["use"] == "calibration":
            shapes.setdefault(p["stack"], set()).add(p["model"])
    out = {}
    for p in data["points"]:
        if len(shapes.get(p.get("stack"), ())) < 2 or p["stack"] not in scales:
            continue
        device = data["clusters"][p["cluster"]]["device"]
        k, k0 = scales[p["stack"]]
        if device in out or k0 <= 0:
            continue
        dev = get_device(device)
        rate = dev.tflops["bf16"] * 1e12 / k
        out[device] = {"k0": k0, "stack": p["stack"], "eff_4096": 4096 / (4096 + k0),
                       "eff_8192": 8192 / (8192 + k0),
                       "bytes_per_output": 2 * k0 / rate * dev.optimizer["mem_bw_Bps"]}
    return out


def size_note(effect: dict[str, dict]) -> str:
    """The fitted size effect in words (:func:`size_effect`)."""
    parts = [f"{d}: k0 = {e['k0']:.0f}, a matmul contracting over 4096 runs at {e['eff_4096']:.2f} of the "
             f"K -> inf rate, over 8192 at {e['eff_8192']:.2f}; as memory traffic at {e['stack']}'s rate "
             f"{e['bytes_per_output']:.0f} bytes per output element" for d, e in effect.items()]
    return ("The source's HFU (recomputation included) rises with width (A100 0.57 (7B) -> 0.67 (70B), H100 "
            "0.37 -> 0.45); one rate per stack cannot follow it (the previous version of this experiment, one rate "
            "per stack and 13B without recomputation: held-out MAPE 13.25 %, worst 26.15 %). The matmul tile cost "
            "does: " + "; ".join(parts) + ". That is too large for a GEMM's own tile epilogue alone, and about "
            "the same bytes on both devices: read it as memory-bound work per matmul output element (norms, "
            "activations, rope, residual adds, casts), whose share falls as 1/width. The K -> inf rates are "
            "above the datasheet peaks (A100 312, H100 989 dense bf16 TFLOP/s) because this term carries that work.")


def plot(rows: list[dict]):
    """Predicted against measured tokens/s per GPU, calibration filled, held-out hollow, per source."""
    from commtune.plots import new_figure, styled

    fig = new_figure(6.4, 5.0)
    with styled():
        ax = fig.subplots(1, 1)
        for i, src in enumerate(sorted({r["source"] for r in rows})):
            for use, style in (("calibration", {"color": f"C{i}"}),
                               ("held_out", {"facecolors": "none", "edgecolors": f"C{i}"})):
                pts = [r for r in rows if r["source"] == src and r["use"] == use]
                if pts:
                    ax.scatter([r["measured_tps"] for r in pts], [r["predicted_tps"] for r in pts], s=36,
                               marker="o", label=f"{src} {use.replace('_', '-')}", **style)
        vals = [v for r in rows for v in (r["measured_tps"], r["predicted_tps"])]
        lo, hi = min(vals) * 0.8, max(vals) * 1.25
        ax.plot([lo, hi], [lo, hi], color="black", lw=1.0, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("published tokens/s per GPU")
        ax.set_ylabel("commtune (sharded simulator) tokens/s per GPU")
        ax.legend(fontsize=7, loc="upper left")
        fig.suptitle("Sharded step vs published FSDP / HSDP measurements")
    return _common.save(fig, "published_sharded.png")


def main() -> int:
    try:
        data = load_data()
    except CommtuneError as e:
        print(f"published_sharded: {e}", file=sys.stderr)
        return 2
    need = missing_requirement()
    if need:
        print(f"published_sharded: {need}", file=sys.stderr)
        return 2
    parts = split(data)
    stacks = sorted({p["stack"] for p in parts["calibration"]})
    scales = fit_all(data, parts["calibration"])
    calib = rows_for(data, parts["calibration"], scales)
    held = rows_for(data, parts["held_out"], scales)
    dirs = directions(data, scales, calib + held)
    s_cal, s_held = summary(calib), summary(held)
    for name, rows in (("calibration", calib), ("held-out", held)):
        print(f"== {name}")
        for r in rows:
            print(f"  {r['id']:30s} {r['gpus']:4d} GPUs  measured {r['measured_tps']:7.0f}  commtune "
                  f"{r['predicted_tps']:7.0f} tokens/s/GPU  ratio {r['predicted_tps'] / r['measured_tps']:.3f}  "
                  f"({r['achieved_tflops']:.0f} TFLOP/s, exposed comm {1e3 * r['exposed_comm_s']:.0f} ms)")
    print(f"calibration MAPE {s_cal['mape_pct']:.2f} %; held-out MAPE {s_held['mape_pct']:.2f} %, "
          f"worst {s_held['worst_pct']:.2f} % over {s_held['points']} points (target: MAPE <= 10 %)")
    for d in dirs:
        print(f"  direction: {d['effect']}: measured {d['measured']}, commtune {d['predicted']}, "
              f"same {d['same_direction']}")
    excluded = [{"id": p["id"], "reason": p["exclude_reason"]} for p in parts["excluded"]]
    result = {"achieved_tflops": {s: rows[0]["achieved_tflops"] for s in stacks
                                  for rows in [[r for r in calib if r["stack"] == s]]},
              "compute_scale": {s: k for s, (k, _) in scales.items()},
              "matmul_k0": {s: k0 for s, (_, k0) in scales.items()}, "size_effect": size_effect(data, scales), "calibration": {"summary": s_cal, "points": calib},
              "held_out": {"summary": s_held, "points": held}, "directions": dirs, "excluded": excluded,
              "not_expressible": NOT_EXPRESSIBLE, "data": str(DATA.relative_to(_common.ROOT))}
    _common.write_json("published_sharded.json", result)
    plot(calib + held)
    cols = [("id", "point"), ("gpus", "GPUs"), ("measured", "measured tok/s/GPU"), ("predicted", "commtune"),
            ("ratio", "ratio"), ("tflops", "fitted TFLOP/s (K -> inf)"), ("exposed", "exposed comm ms")]
    fmt = [dict(r, measured=f"{r['measured_tps']:.0f}", predicted=f"{r['predicted_tps']:.0f}",
                ratio=f"{r['predicted_tps'] / r['measured_tps']:.3f}", tflops=f"{r['achieved_tflops']:.0f}",
                exposed=f"{1e3 * r['exposed_comm_s']:.0f}") for r in calib + held]
    md = ["# Sharded simulator vs published FSDP measurements (`experiments/published_sharded.py`)", "",
          f"Data and quotes: `{result['data']}`. One compute rate fitted per stack and one matmul tile cost "
          "`k0` per device class, on calibration points only (IBM's 7B and 70B rows calibrate: two shapes per "
          "device); held-out points predicted, never refitted. Figure: `published_sharded.png`.", "",
          f"Calibration MAPE {s_cal['mape_pct']:.2f} % ({s_cal['points']} points); **held-out MAPE "
          f"{s_held['mape_pct']:.2f} %, worst {s_held['worst_pct']:.2f} %** ({s_held['points']} points; target <= 10 %).",
          "", "## Calibration", "", _common.md_table(fmt[:len(calib)], cols),
          "", "## Held out", "", _common.md_table(fmt[len(calib):], cols),
          "", "## The size effect", "", size_note(result["size_effect"]), "",
          "## Directions", "", "| effect | source | measured | commtune | same |", "|---|---|---|---|---|"]
    md += [f"| {d['effect']} | {d['source']} | {d['measured']} | {d['predicted']} | {d['same_direction']} |"
           for d in dirs]
    md += ["", "## Recorded, not predicted", ""] + [f"- `{x['id']}`: {x['reason']}" for x in excluded]
    md += ["", "## Not expressible", ""] + [f"- {x}" for x in NOT_EXPRESSIBLE]
    _common.write_md("published_sharded.md", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
