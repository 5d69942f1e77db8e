"""Chrome-trace / Perfetto JSON timeline of one simulated step.

Open the file in https://ui.perfetto.dev or chrome://tracing. Track 1 is GPU
compute (forward, then backward per layer); track 2 has one row per stream:
each fused buffer's share of the all-reduce on every stream (``split``), or
buffer j whole on stream j mod K (``round_robin``); times are microseconds.
"""
from __future__ import annotations

from typing import Any

from commtune.io import atomic_write_json
from commtune.knobs import Knobs
from commtune.units import format_size
from simulators.engine import StepResult
from simulators.workload import Workload


def trace_events(workload: Workload, result: StepResult, knobs: Knobs) -> list[dict[str, Any]]:
    us = 1e6
    fwd = workload.forward_s
    ev: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "GPU compute"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "network"}},
        {"ph": "X", "pid": 1, "tid": 0, "name": "forward", "ts": 0.0, "dur": fwd * us, "cat": "compute"},
    ]
    for layer, start, end in workload.layer_backward:
        if end > start:
            ev.append({"ph": "X", "pid": 1, "tid": 0, "name": f"bwd {layer}", "ts": (fwd + start) * us,
                       "dur": (end - start) * us, "cat": "compute"})
    for k in range(knobs.num_streams):
        ev.append({"ph": "M", "pid": 2, "tid": k, "name": "thread_name", "args": {"name": f"stream {k}"}})
    rr = knobs.stream_mode == "round_robin"
    for j, buf in enumerate(result.buffers):
        share = buf.grad_bytes if rr else buf.grad_bytes / knobs.num_streams
        for k in ([j % knobs.num_streams] if rr else range(knobs.num_streams)):
            ev.append({
                "ph": "X", "pid": 2, "tid": k, "name": f"allreduce #{j}", "cat": "comm",
                "ts": (fwd + buf.start_s) * us, "dur": (buf.end_s - buf.start_s) * us,
                "args": {"tensors": f"{workload.names[buf.first]} .. {workload.names[buf.last]}",
                         "num_tensors": buf.last - buf.first + 1, "bytes": share,
                         "size": format_size(share), "dispatch_us": (fwd + buf.dispatch_s) * us},
            })
    ev.append({"ph": "i", "pid": 1, "tid": 0, "name": "step end", "ts": result.step_time_s * us, "s": "g"})
    return ev


def write_trace(path: str, workload: Workload, result: StepResult, knobs: Knobs) -> None:
    atomic_write_json(path, {"traceEvents": trace_events(workload, result, knobs), "displayTimeUnit": "ms",
                             "otherData": {"model": workload.model, "knobs": knobs.to_dict()}})
