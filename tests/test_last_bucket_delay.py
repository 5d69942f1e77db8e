"""The end-of-backward delay of the last bucket (``ClusterSpec.last_bucket_delay_s``): its
exact effect on a step, where it is hidden, and the DDP calibration's fit that recovers it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.probe.ddp_calib import (LAST_BUCKET_DELAY_MAX_S, apply_last_bucket_delay, calib_knobs,
                                      fit_last_bucket_delay, tail_backward_s, tail_workload)
from commtune.probe.probe import calibration
from simulators import Simulator
from simulators.bounds import step_lower_bound_s
from simulators.network import network_for
from simulators.workload import synthetic_workload
from tests.test_calibrated import _records

MiB = 2**20


def _calibrated(n: int = 3) -> ClusterSpec:
    spec, _ = calibration(_records(n, (1, 2, 4)), hosts=n)
    return spec


def _tail_record(spec: ClusterSpec, delay: float) -> dict:
    backward = tail_backward_s(spec)
    t = Simulator(tail_workload(backward), dataclasses.replace(spec, last_bucket_delay_s=delay)).run(
        calib_knobs(1, MiB)).step_time_s
    return {"streams": 1, "bucket_bytes": MiB, "stream_mode": "split", "backward_s": backward,
            "step_time_s": t, "step_times_s": [t]}


def test_a_last_bucket_alone_starts_the_delay_after_backward():
    spec = _calibrated()
    w = tail_workload(tail_backward_s(spec))
    k = calib_knobs(1, MiB)
    base = Simulator(w, spec).run(k)
    late = Simulator(w, dataclasses.replace(spec, last_bucket_delay_s=0.004)).run(k)
    assert base.buffers[-1].start_s == pytest.approx(w.backward_s)  # alone: nothing queued before it
    assert late.buffers[-1].start_s == pytest.approx(w.backward_s + 0.004, abs=1e-12)
    assert late.step_time_s == pytest.approx(base.step_time_s + 0.004, abs=1e-12)
    assert [b.end_s for b in late.buffers[:-1]] == [b.end_s for b in base.buffers[:-1]]
    batch = Simulator(w, dataclasses.replace(spec, last_bucket_delay_s=0.004)).run_batch([k])
    assert batch["step_time_s"][0] == pytest.approx(late.step_time_s, rel=1e-12)


def test_the_delay_is_hidden_while_the_link_is_busy_and_absent_on_one_rank():
    spec = _calibrated()
    # 16 x 1 MiB ready within 10 ms: the link is still busy long after backward ends
    w = synthetic_workload(np.linspace(0.001, 0.01, 16), np.full(16, MiB // 4), forward_s=0.0, backward_s=0.01)
    k = calib_knobs(1, MiB)
    base = Simulator(w, spec).run(k)
    assert base.buffers[-1].start_s - w.backward_s > 0.004
    assert Simulator(w, dataclasses.replace(spec, last_bucket_delay_s=0.004)).run(k).step_time_s == base.step_time_s
    one = dataclasses.replace(spec, nodes=1)
    tail = tail_workload(0.2)
    assert (Simulator(tail, dataclasses.replace(one, last_bucket_delay_s=0.004)).run(k).step_time_s
            == Simulator(tail, one).run(k).step_time_s)


def test_lower_bound_counts_the_delay():
    spec = ClusterSpec(nodes=3, gpus_per_node=1, inter_bw_Bps=125e6, last_bucket_delay_s=0.004)
    w = tail_workload(0.2)
    lb = step_lower_bound_s(w, network_for(spec))
    assert lb <= Simulator(w, spec).run(calib_knobs(1, MiB)).step_time_s + 1e-12
    assert lb > step_lower_bound_s(w, network_for(dataclasses.replace(spec, last_bucket_delay_s=0.0))) + 0.003


@pytest.mark.parametrize("delay", [0.0, 0.0035, 0.012])
def test_fit_recovers_the_delay_from_the_tail_run(delay):
    spec = _calibrated()
    fitted = fit_last_bucket_delay([_tail_record(spec, delay)], spec)
    assert fitted["delay_s"] == pytest.approx(delay, abs=1e-7)
    assert fitted["measured_s"] - fitted["simulated_at_0_s"] == pytest.approx(delay, abs=1e-9)


def test_fit_clips_at_zero_and_at_its_bound():
    spec = _calibrated()
    fast = _tail_record(spec, 0.0)
    fast["step_time_s"] -= 0.005
    assert fit_last_bucket_delay([fast], spec)["delay_s"] == 0.0
    slow = _tail_record(spec, 0.0)
    slow["step_time_s"] += 1.0
    assert fit_last_bucket_delay([slow], spec, d_max_s=0.1)["delay_s"] == 0.1
    assert fit_last_bucket_delay([], spec)["delay_s"] == 0.0
    _, extra = calibration(_records(3, (1, 2, 4)), hosts=3)
    capped = apply_last_bucket_delay(spec, extra, [slow])
    assert capped.last_bucket_delay_s == LAST_BUCKET_DELAY_MAX_S
    assert any("the delay is capped there" in w for w in extra["fit"]["warnings"])
    _, extra = calibration(_records(3, (1, 2, 4)), hosts=3)
    apply_last_bucket_delay(spec, extra, [_tail_record(spec, 0.006)])
    assert not any("capped" in w for w in extra["fit"]["warnings"])


def test_tail_backward_lets_the_early_buckets_finish_before_it_ends():
    slow = _calibrated(4)  # 300 Mbit/s per flow: one stream takes ~45 ms per MiB on 4 ranks
    backward = tail_backward_s(slow)
    assert backward > 0.2
    res = Simulator(tail_workload(backward), slow).run(calib_knobs(1, MiB))
    assert len(res.buffers) == 5 and res.buffers[-2].end_s < backward


def test_calibration_file_carries_the_delay_and_refit_reproduces_it(tmp_path):
    from commtune.cluster import load_cluster_file
    from commtune.probe.probe import summary, write_calibration
    from commtune.probe.refit import refit_calibration

    spec, extra = calibration(_records(3, (1, 2, 4)), hosts=3)
    spec = apply_last_bucket_delay(spec, extra, [_tail_record(spec, 0.006)])
    assert spec.last_bucket_delay_s == pytest.approx(0.006, abs=1e-7)
    assert "the last bucket starts 6" in summary(spec, extra)
    path = tmp_path / "c.yaml"
    write_calibration(str(path), spec, extra)
    assert load_cluster_file(path).last_bucket_delay_s == pytest.approx(0.006, abs=1e-7)
    again, extra2 = refit_calibration(path)
    assert again.last_bucket_delay_s == pytest.approx(spec.last_bucket_delay_s, rel=1e-9)
    assert extra2["ddp_tail_measurements"] == extra["ddp_tail_measurements"]


def test_cluster_file_key_and_bad_values():
    assert ClusterSpec.from_dict({"last_bucket_delay": "5ms"}).last_bucket_delay_s == pytest.approx(0.005)
    with pytest.raises(CommtuneError, match="last_bucket_delay_s must be a non-negative time"):
        ClusterSpec(last_bucket_delay_s=-1e-3)


def test_solve_rising_clips_and_bisects():
    from commtune.probe.ddp_calib import solve_rising

    assert solve_rising(lambda x: 3 * x, 0.6, 1.0) == pytest.approx(0.2, abs=1e-12)
    assert solve_rising(lambda x: 3 * x + 1, 0.5, 1.0) == 0.0
    assert solve_rising(lambda x: x, 5.0, 1.0) == 1.0
