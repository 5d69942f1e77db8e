"""`commtune search` end to end: JSON schema, profiles, resume, shared studies, errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from commtune.cluster import make_cluster
from commtune.profiles import load_profile
from commtune.cli import main as run_cli

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BASE = ["search", "--model", "resnet50", "--quiet"]


def _json(capsys, argv):
    rc = run_cli(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def _complete(storage, study):
    from commtune.search.storage import open_storage

    s = optuna.load_study(study_name=study, storage=open_storage(storage))
    return sorted((t for t in s.get_trials() if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)


def test_json_schema_and_profile(tmp_path, capsys):
    d = _json(capsys, [*BASE, "--bw", "32gbit", "--trials", "12", "--workdir", str(tmp_path), "--json"])
    for key in ("best", "predicted_step_time_s", "baselines", "lower_bound_s", "trials", "profile_path",
                "scaling_efficiency", "speedup", "study", "storage", "gap_to_lower_bound"):
        assert key in d, key
    assert set(d["baselines"]) == {"ddp_default", "horovod_default"}
    assert d["trials"] == 12
    assert d["lower_bound_s"] <= d["predicted_step_time_s"] <= min(d["baselines"].values())
    assert d["profile_path"] == str(tmp_path / "resnet50-32gbit.json")
    prof = load_profile(d["profile_path"])
    assert prof.knobs.to_dict() == d["best"]
    assert prof.provenance["trials"] == 12 and prof.lower_bound_s == d["lower_bound_s"]
    assert (tmp_path / "commtune-studies.db").exists()


def test_table_output(tmp_path, capsys):
    rc = run_cli([*BASE, "--trials", "5", "--workdir", str(tmp_path), "-o", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    assert rc == 0
    for needle in ("predicted step time", "speedup vs ddp default", "speedup vs horovod default",
                   "physical lower bound", "distance to lower bound", "profile written"):
        assert needle in out
    assert (tmp_path / "p.json").exists()


def test_resume_keeps_finished_trials(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/s.db"
    args = [*BASE, "--storage", db, "--study", "r", "--json", "--no-profile", "--sampler", "tpe"]
    a = _json(capsys, [*args, "--trials", "10"])
    first = [(t.params, t.value) for t in _complete(db, "r")]
    b = _json(capsys, [*args, "--trials", "20"])
    trials = _complete(db, "r")
    assert a["trials"] == 10 and b["trials"] == 20 and b["new_trials"] == 10 and len(trials) == 20
    assert [(t.params, t.value) for t in trials[:10]] == first
    c = _json(capsys, [*args, "--trials", "20"])  # nothing left to do
    assert c["new_trials"] == 0 and c["predicted_step_time_s"] == b["predicted_step_time_s"]


def test_default_study_name_resumes(tmp_path, capsys):
    args = [*BASE, "--workdir", str(tmp_path), "--json"]
    a = _json(capsys, [*args, "--trials", "6"])
    b = _json(capsys, [*args, "--trials", "9"])
    assert a["study"] == b["study"] and b["trials"] == 9 and b["new_trials"] == 3


@pytest.mark.slow
def test_kill_9_then_rerun_continues(tmp_path):
    db = f"sqlite:///{tmp_path}/k.db"
    cmd = [sys.executable, "-m", "commtune", *BASE, "--storage", db, "--study", "k", "--no-profile",
           "--sampler", "random"]
    p = subprocess.Popen([*cmd, "--trials", "10000"], env=ENV, cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            if len(_complete(db, "k")) >= 5:
                break
        except Exception:
            pass
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = [(t.number, t.params) for t in _complete(db, "k")]
    assert len(before) >= 5
    target = len(before) + 5
    subprocess.run([*cmd, "--trials", str(target)], env=ENV, cwd=tmp_path, check=True, capture_output=True)
    after = _complete(db, "k")
    assert len(after) == target
    assert [(t.number, t.params) for t in after][: len(before)] == before
    from commtune.search.storage import open_storage

    s = optuna.load_study(study_name="k", storage=open_storage(db))
    assert not [t for t in s.get_trials() if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_fill_one_study(tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/w.db" if kind == "sqlite" else str(tmp_path / "w.log")
    n = 40
    cmd = [sys.executable, "-m", "commtune", *BASE, "--storage", storage, "--study", "shared", "--trials", str(n),
           "--no-profile", "--json"]
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    trials = _complete(storage, "shared")
    assert len(trials) == n  # the budget is exact: no worker overshoots it
    assert len({t.number for t in trials}) == n
    # No trial was evaluated twice: the trials the workers report evaluating add up to the budget,
    # and every trial is tagged with one of the two workers. (How the budget splits between them
    # depends on scheduling: under load one process may do all of it.)
    assert sum(json.loads(o[0])["new_trials"] for o in outs) == n
    pids = {str(p.pid) for p in procs}
    assert {str(t.system_attrs["commtune:worker"]["pid"]) for t in trials} <= pids


def test_journal_url_form(tmp_path, capsys):
    url = f"journal://{tmp_path}/j.log"
    d = _json(capsys, [*BASE, "--storage", url, "--trials", "6", "--json", "--no-profile"])
    assert d["trials"] == 6 and d["storage"].startswith("journal://")
    assert len(_complete(url, d["study"])) == 6


def test_multi_bandwidth_writes_one_profile_each(tmp_path, capsys):
    d = _json(capsys, [*BASE, "--bw", "10gbit,32gbit,100gbit", "--trials", "8", "--workdir", str(tmp_path),
                       "--storage", "memory", "--json"])
    assert [r["bw"] for r in d["runs"]] == ["10gbit", "32gbit", "100gbit"]
    for bw in ("10gbit", "32gbit", "100gbit"):
        p = tmp_path / f"resnet50-{bw}.json"
        assert p.exists() and load_profile(p).knobs
    assert len(d["summary"]) == 3 and len({r["study"] for r in d["runs"]}) == 3
    rc = run_cli([*BASE, "--bw", "10gbit,100gbit", "--trials", "5", "--workdir", str(tmp_path), "--storage", "memory"])
    assert rc == 0 and "how the best knobs move" in capsys.readouterr().out


def test_grid_sampler_reports_size(tmp_path, capsys):
    d = _json(capsys, [*BASE, "--sampler", "grid", "--space", "horovod", "--json", "--no-profile",
                       "--storage", "memory"])
    assert d["grid_size"] == 1280 and d["trials"] == 1280


def test_same_seed_same_cli_result(tmp_path, capsys):
    args = [*BASE, "--trials", "15", "--json", "--no-profile", "--storage", "memory", "--seed", "5"]
    a, b = _json(capsys, args), _json(capsys, args)
    assert a["best"] == b["best"] and a["predicted_step_time_s"] == b["predicted_step_time_s"]


ERRORS = [
    (["--sampler", "bogus"], "unknown sampler"),
    (["--backend", "spark"], "unknown backend"),
    (["--trials", "0"], "--trials: '0' is out of range"),
    (["--trials", "-3"], "--trials: '-3' is out of range"),
    (["--storage", "nosuchdb://x/y"], "unusable storage"),
    (["--storage", "sqlite:////nonexistent/dir/x.db"], "unusable storage"),
    (["--storage", "foo.txt"], "unusable storage"),
    (["--space", "nospace"], "unknown search space"),
    (["--space", "/nonexistent.yaml"], "cannot read search space"),
    (["--bw", "fast"], "--bw"),
    (["--model", "resnet5000"], "resnet5000"),
]


@pytest.mark.parametrize("extra,needle", ERRORS)
def test_bad_input_is_one_line_exit_2_no_files(tmp_path, capsys, extra, needle):
    rc = run_cli([*BASE, "--workdir", str(tmp_path / "wd"), "--trials", "3", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list((tmp_path / "wd").glob("*.json"))


def test_bad_space_file_exit_2(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text("knobs:\n  streams: {low: 1, high: 4}\n")
    rc = run_cli([*BASE, "--space", str(f), "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown knob 'streams'" in err and str(f) in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_subprocess_error_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "commtune", *BASE, "--sampler", "nope"], env=ENV, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_storage_survives_pickling(tmp_path, kind):
    """Ray's OptunaSearch pickles its storage into checkpoints: the copy must work."""
    import pickle

    from commtune.search.storage import open_storage

    url = f"sqlite:///{tmp_path}/p.db" if kind == "sqlite" else str(tmp_path / "p.log")
    study = optuna.create_study(study_name="p", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    copy = pickle.loads(pickle.dumps(open_storage(url)))
    again = optuna.load_study(study_name="p", storage=copy)
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(_complete(url, "p")) == 3


def test_cluster_file_without_bw_keeps_its_link(tmp_path, capsys):
    calib = Path(__file__).resolve().parent.parent / "experiments" / "results" / "calib-1gbit.yaml"
    d = _json(capsys, [*BASE, "--cluster", str(calib), "--trials", "3",
                       "--workdir", str(tmp_path), "--json"])
    prof = load_profile(d["profile_path"])
    assert prof.cluster.to_dict() == make_cluster(cluster=str(calib)).to_dict()  # not replaced by 32 Gbit/s
    assert d["profile_path"] == str(tmp_path / "resnet50-calib-1gbit.json")


def test_sharding_auto_picks_a_sharded_space_for_a_model_that_does_not_fit(tmp_path, capsys):
    d = _json(capsys, ["search", "--model", "llama3.2-1b", "--quiet", "--trials", "4", "--screen", "64",
                       "--workdir", str(tmp_path), "--json"])
    assert d["best"]["sharding"] in ("grad", "full", "hybrid")
    assert {c["sharding"] for c in d["sharding_choices"]} == {"grad", "full", "hybrid"}
    assert d["predicted_step_time_s"] == min(c["step_time_s"] for c in d["sharding_choices"])
    assert d["baselines"]["ddp_default"] is None and d["speedup"]["ddp_default"] is None  # DDP does not fit
    assert set(d["baselines"]) == {"ddp_default", "fsdp2_default", "zero3_default", "zero2_default"}
    assert d["peak_memory_bytes"] <= d["device_memory_bytes"] == 16 * 2**30
    assert d["lower_bound_s"] is None
    assert load_profile(d["profile_path"]).knobs.sharding == d["best"]["sharding"]


def test_sharding_pinned_and_refusals(tmp_path, capsys):
    d = _json(capsys, ["search", "--model", "llama3.2-1b", "--quiet", "--sharding", "grad", "--trials", "3",
                       "--screen", "32", "--workdir", str(tmp_path), "--json"])
    assert d["best"]["sharding"] == "grad" and "sharding_choices" not in d
    for argv, needle in (
        (["--model", "llama3-8b"], "llama3-8b needs 30.34 GiB per GPU even fully sharded over 128 GPUs"),
        (["--model", "llama3.2-1b", "--space", "fsdp", "--sharding", "full"], "both choose the space"),
        (["--model", "resnet50", "--sharding", "sideways"], "--sharding 'sideways': give one of auto, none"),
    ):
        out = tmp_path / "w"
        assert run_cli(["search", *argv, "--workdir", str(out)]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_resnet_main_job_keeps_all_reduce(tmp_path, capsys):
    d = _json(capsys, [*BASE, "--trials", "3", "--screen", "32", "--workdir", str(tmp_path), "--json"])
    assert d["best"]["sharding"] == "none" and set(d["baselines"]) == {"ddp_default", "horovod_default"}
    assert d["peak_memory_bytes"] <= d["device_memory_bytes"] and d["infeasible_evaluations"] == 0
