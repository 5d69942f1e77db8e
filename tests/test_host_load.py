"""How busy the machine was before the probe: /proc/stat arithmetic, the warning, and
where the calibration file keeps it."""
from __future__ import annotations

import pytest

from commtune.host_load import BUSY_WARN_CORES, busy_cores, busy_warning, cpu_jiffies
from commtune.probe.probe import calibration
from tests.test_calibrated import _records


def test_cpu_jiffies_sums_busy_and_idle_fields(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 5 20 400 10 3 2 50 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    assert cpu_jiffies(str(stat)) == (100 + 5 + 20 + 3 + 2, 400 + 10)
    stat.write_text("intr 1 2 3\n")
    assert cpu_jiffies(str(stat)) is None
    assert cpu_jiffies(str(tmp_path / "missing")) is None


def test_cpu_jiffies_reads_this_machine():
    busy, idle = cpu_jiffies()
    assert busy >= 0 and idle >= 0


def test_busy_cores_is_the_busy_share_of_every_core():
    samples = iter([(1000, 5000), (1000 + 150, 5000 + 250)])  # 150 busy of 400 jiffies
    assert busy_cores(1.0, cores=2, sample=lambda: next(samples), sleep=lambda s: None) == pytest.approx(0.75)
    assert busy_cores(1.0, cores=2, sample=lambda: None, sleep=lambda s: None) is None
    same = iter([(10, 10), (10, 10)])
    assert busy_cores(1.0, cores=2, sample=lambda: next(same), sleep=lambda s: None) is None


def test_warning_from_half_a_core():
    assert busy_warning(None) is None and busy_warning(BUSY_WARN_CORES - 0.01, 2) is None
    msg = busy_warning(1.02, 2)
    assert msg.startswith("1.0 of 2 cores were busy before the probe started") and "quiet machine" in msg


def test_calibration_keeps_the_busy_cores_and_warns(tmp_path):
    from commtune.probe.probe import write_calibration
    from commtune.probe.refit import refit_calibration

    quiet = _records(3, (1, 2, 4))
    _, extra = calibration({**quiet, "host_busy_cores": 0.1}, hosts=3)
    assert extra["provenance"]["host_busy_cores"] == 0.1 and not any("busy" in w for w in extra["fit"]["warnings"])
    spec, extra = calibration({**quiet, "host_busy_cores": 1.1}, hosts=3)
    assert extra["provenance"]["host_busy_cores"] == 1.1
    assert any("cores were busy before the probe" in w for w in extra["fit"]["warnings"])
    path = tmp_path / "c.yaml"
    write_calibration(str(path), spec, extra)
    _, again = refit_calibration(path)
    assert again["provenance"]["host_busy_cores"] == 1.1 and again["fit"]["warnings"] == extra["fit"]["warnings"]
    _, plain = calibration(quiet, hosts=3)
    assert "host_busy_cores" not in plain["provenance"]


def test_busy_between_two_samples_and_the_cpu_bound_share():
    from commtune.host_load import CPU_BOUND_SHARE, busy_between, cpu_bound

    assert busy_between((100, 900), (100 + 270, 900 + 30), cores=2) == pytest.approx(1.8)
    assert busy_between(None, (1, 1), cores=2) is None and busy_between((5, 5), (5, 5), cores=2) is None
    assert cpu_bound(CPU_BOUND_SHARE * 2, 2) and not cpu_bound(CPU_BOUND_SHARE * 2 - 0.01, 2)
    assert not cpu_bound(None, 2) and not cpu_bound(1.9, None)


def test_validate_marks_cpu_bound_points():
    """A point timed with the host's cores busy is marked in the report; the summary counts it."""
    from commtune.validation import compare, format_report

    def row(name, busy):
        return {"config": name, "measured_s": 1.0, "predicted_s": 0.95, "spread": 0.05, "pass_spread": 0.0,
                "host_busy_cores": busy, "host_cores": 2, "extrapolation": []}

    rows = [row("a", 1.9), row("b", 0.4), row("c", None)]
    summary = {**compare([0.95] * 3, [1.0, 1.1, 1.2]), "cpu_bound_points": 1}
    text = format_report({"rows": rows, "summary": summary})
    lines = text.splitlines()
    assert "CPU-BOUND 1.9/2 cores" in lines[1] and "CPU-BOUND" not in lines[2] and "CPU-BOUND" not in lines[3]
    assert "1 of 3 configurations kept at least 85% of the host's cores busy" in text
    assert "cpu_bound_points" in summary



def test_mean_busy_cores_over_passes():
    from commtune.host_load import mean_busy_cores

    assert mean_busy_cores([{"host_busy_cores": 1.0}, {"host_busy_cores": None}, {}, {"host_busy_cores": 0.5}]) == 0.75
    assert mean_busy_cores([{}, {"host_busy_cores": None}]) is None
