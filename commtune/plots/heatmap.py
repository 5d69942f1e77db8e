"""``heatmap``: step time over fusion threshold x number of streams.

Every other knob keeps the value given by the knob flags (default: Horovod's
defaults). The whole grid is one :meth:`Simulator.run_batch` call; the
threshold axis is logarithmic, the best cell is ringed and the starting
configuration marked.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from commtune.knobs import Knobs
from commtune.units import MiB, format_size
from simulators import KnobArrays



def heatmap_data(simulator, base: Knobs, thresholds, streams, metric: str = "step_time_s") -> np.ndarray:
    """``metric`` for every (streams, threshold) pair: shape (len(streams), len(thresholds))."""
    t = np.asarray(thresholds, dtype=np.int64)
    s = np.asarray(streams, dtype=np.int64)
    tt, ss = np.meshgrid(t, s)
    cols = {name: getattr(base, name) for name in KnobArrays.__dataclass_fields__}
    cols.update(fusion_threshold_bytes=tt.ravel(), num_streams=ss.ravel())
    m = simulator.run_batch(KnobArrays.from_columns(tt.size, **cols))
    return m[metric].reshape(tt.shape)


def plot_heatmap(scenario, base: Knobs | None = None, thresholds=None, streams=None, metric: str = "step_time_s"):
    """Heat map of ``metric`` (ms) over threshold (log x) and streams (y)."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from commtune.plots import new_figure, plain_log_axis, styled

    base = base or Knobs()
    thresholds = np.geomspace(64 * 1024, 2**30, 41).astype(np.int64) if thresholds is None else np.asarray(thresholds)
    streams = np.arange(1, 9) if streams is None else np.asarray(streams)
    z = heatmap_data(scenario.simulator, base, thresholds, streams, metric) * 1e3
    # Cell edges: geometric midpoints on x, integer halves on y.
    lt = np.log(thresholds.astype(np.float64))
    mid = np.exp((lt[1:] + lt[:-1]) / 2)
    xe = np.concatenate([[thresholds[0] ** 2 / mid[0]], mid, [thresholds[-1] ** 2 / mid[-1]]])
    ye = np.concatenate([streams - 0.5, [streams[-1] + 0.5]])
    fig = new_figure(7.4, 4.4)
    with styled():
        ax = fig.add_subplot()
        ax.grid(False)
        positive = z[z > 0]
        norm = LogNorm(vmin=positive.min(), vmax=z.max()) if positive.size and z.max() / positive.min() > 3 else None
        mesh = ax.pcolormesh(xe / MiB, ye, z, cmap="viridis_r", norm=norm, shading="flat")
        label = {"step_time_s": "step time (ms)", "exposed_comm_s": "exposed communication (ms)"}[metric]
        cb = fig.colorbar(mesh, ax=ax, label=label)
        cb.ax.tick_params(labelsize=8, which="both")
        if norm is not None:
            plain_log_axis(cb.ax.yaxis)
        ax.set_xscale("log")
        ticks = [t for t in (0.0625, 0.25, 1, 4, 16, 64, 256, 1024) if xe[0] / MiB <= t <= xe[-1] / MiB]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_yticks(streams)
        ax.set_xlabel(f"fusion threshold (MiB, log scale) — {base.fusion_policy} fusion")
        ax.set_ylabel("communication streams")
        j, i = np.unravel_index(np.argmin(z), z.shape)
        ax.plot(thresholds[i] / MiB, streams[j], "o", ms=13, mfc="none", mec="red", mew=2,
                label=f"best: {format_size(thresholds[i])}, {streams[j]} stream(s), {z[j, i]:.1f} ms")
        if base.num_streams in streams:
            start = dataclasses.replace(base)
            r = scenario.simulator.run(start)
            val = (r.step_time_s if metric == "step_time_s" else r.exposed_comm_s) * 1e3
            ax.plot(base.fusion_threshold_bytes / MiB, base.num_streams, "X", ms=10, color="white", mec="black",
                    label=f"given knobs: {format_size(base.fusion_threshold_bytes)}, {base.num_streams} stream(s), {val:.1f} ms")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=1, frameon=False)
        c = scenario.cluster
        ax.set_title(f"{scenario.model.name}, {c.nodes}x{c.gpus_per_node} GPUs, {c.name}: {label.split(' (')[0]}", loc="left")
    return fig
