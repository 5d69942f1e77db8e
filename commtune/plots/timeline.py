"""``timeline``: backward compute against the fused buffers on each stream.

From :meth:`Simulator.run(knobs).buffers`: the top lane is GPU compute
(forward, then backward layer by layer); below it one lane per stream shows
each fused buffer's all-reduce (every buffer is split evenly over the
streams, so its share runs on all of them at once). Thin vertical lines mark
when each buffer was dispatched (all its gradients ready and negotiated); the
dashed line is the end of the step.
"""
from __future__ import annotations


from commtune.knobs import Knobs
from commtune.units import format_size


def plot_timeline(scenario, knobs: Knobs | None = None, title: str | None = None):
    """Gantt chart of one simulated step (times in ms from the step start)."""
    from matplotlib.patches import Patch

    from commtune.plots import new_figure, styled

    knobs = knobs or Knobs()
    w = scenario.workload
    r = scenario.simulator.run(knobs)
    ms = 1e3
    fwd = w.forward_s
    k = knobs.num_streams
    lanes = ["compute"] + [f"stream {i}" for i in range(k)]
    fig = new_figure(8.0, 1.9 + 0.45 * len(lanes))
    with styled():
        ax = fig.add_subplot()
        ax.grid(axis="y", visible=False)
        y_compute = len(lanes) - 1
        h = 0.7
        ax.broken_barh([(0, fwd * ms)], (y_compute - h / 2, h), facecolors="0.75", edgecolors="0.4", lw=0.5)
        ax.broken_barh([(fwd * ms, w.backward_s * ms)], (y_compute - h / 2, h), facecolors="#4c72b0", lw=0)
        colors = ["#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"]
        for j, buf in enumerate(r.buffers):
            c = colors[j % len(colors)]
            for s in range(k):
                y = len(lanes) - 2 - s
                ax.broken_barh([((fwd + buf.start_s) * ms, (buf.end_s - buf.start_s) * ms)], (y - h / 2, h),
                               facecolors=c, edgecolors="black", lw=0.4)
            ax.plot([(fwd + buf.dispatch_s) * ms] * 2, [-0.5, len(lanes) - 1.5], color=c, lw=0.5, alpha=0.5)
        ax.axvline(r.step_time_s * ms, color="black", ls="--", lw=1.2)
        ax.set_yticks(range(len(lanes)), list(reversed(lanes)))
        ax.set_ylim(-0.6, len(lanes) - 0.4)
        ax.set_xlim(0, r.step_time_s * ms * 1.03)
        ax.set_xlabel("time from step start (ms)")
        mean = w.total_grad_bytes / r.num_buffers
        handles = [
            Patch(facecolor="0.75", edgecolor="0.4", label=f"forward {fwd * ms:.1f} ms"),
            Patch(facecolor="#4c72b0", label=f"backward {w.backward_s * ms:.1f} ms"),
            Patch(facecolor=colors[0], edgecolor="black", label=f"{r.num_buffers} fused all-reduce(s), mean {format_size(mean)}"),
        ]
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", ls="--", label=f"step end {r.step_time_s * ms:.1f} ms "
                              f"(efficiency {r.scaling_efficiency:.0%})"))
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        c = scenario.cluster
        ax.set_title(title or f"{scenario.model.name} on {c.nodes}x{c.gpus_per_node} GPUs ({c.name}): {knobs.fusion_policy}, "
                     f"{format_size(knobs.fusion_threshold_bytes)}, {k} stream(s)"
                     f"{', hierarchical' if knobs.hierarchical else ''}{', fp16 wire' if knobs.wire_precision == 'fp16' else ''}",
                     loc="left")
    return fig
