"""The public Python API (commtune.simulate/search/load_profile/...): same results and
errors as the CLI."""
from __future__ import annotations

import json

import pytest

import commtune
from commtune.cli import main as run_cli


def test_simulate_matches_the_cli(capsys):
    m = commtune.simulate(model="resnet50", bw="32gbit", fusion_threshold_bytes="64MiB", num_streams=2, nodes=4)
    assert run_cli(["simulate", "--model", "resnet50", "--bw", "32gbit", "--fusion", "64MiB",
                    "--streams", "2", "--nodes", "4", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert m["step_time_s"] == pytest.approx(cli["step_time_s"], rel=1e-12)
    assert m["num_buffers"] == cli["num_buffers"]


def test_search_result_profile_round_trip(tmp_path):
    run = commtune.search(model="resnet50", bw="32gbit", trials=8, seed=0)
    assert run.predicted["step_time_s"] <= min(run.baselines.values())
    assert set(run.baselines) == {"ddp_default", "horovod_default"}
    path = run.save(tmp_path / "p.json")
    prof = commtune.load_profile(path)
    assert prof.knobs == run.best and prof.predicted["step_time_s"] == pytest.approx(run.predicted["step_time_s"])
    assert prof.provenance["trials"] == 8


def test_search_same_as_cli_with_same_seed(tmp_path, capsys):
    run = commtune.search(model="resnet50", bw="10gbit", trials=6, seed=3)
    assert run_cli(["search", "--model", "resnet50", "--bw", "10gbit", "--trials", "6", "--seed", "3", "--json",
                    "--workdir", str(tmp_path), "--no-profile"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["best"] == run.best.to_dict()


@pytest.mark.parametrize("call, needle", [
    (lambda: commtune.simulate(model="resnt50"), "did you mean 'resnet50'"),
    (lambda: commtune.simulate(fusion_treshold_bytes=1), "did you mean 'fusion_threshold_bytes'"),
    (lambda: commtune.simulate(bw="fast"), "malformed --bw 'fast'"),
    (lambda: commtune.simulate(num_streams="x"), "num_streams"),
    (lambda: commtune.search(trials=0), "trials 0 is out of range"),
    (lambda: commtune.search(sampler="tpee"), "did you mean 'tpe'"),
    (lambda: commtune.search(backend="rey"), "did you mean 'ray'"),
    (lambda: commtune.search(nodez=2), "unknown option 'nodez'"),
    (lambda: commtune.load_profile("/nonexistent/p.json"), "cannot read profile"),
])
def test_bad_input_is_one_commtune_error(call, needle):
    with pytest.raises(commtune.CommtuneError) as exc:
        call()
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_search_and_probe_are_callable_also_as_subpackages():
    import commtune.probe.launch  # noqa: F401 -- binds commtune.probe to the subpackage
    import commtune.search.space  # noqa: F401

    assert callable(commtune.search) and callable(commtune.probe)
    assert commtune.search.SearchConfig is not None  # still the package
    with pytest.raises(commtune.CommtuneError, match="ranks must be at least 2"):
        commtune.probe(ranks=1)


def test_api_names_survive_importing_every_subpackage():
    """A subpackage imported under an API name would shadow the function (commtune.search,
    commtune.probe are made callable; other names must not collide)."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(commtune.__path__):
        if m.name != "__main__":
            importlib.import_module(f"commtune.{m.name}")
    for name in commtune.__all__:
        if name not in ("__version__", "CommtuneError", "SearchRun"):
            assert callable(getattr(commtune, name)), name


def test_probe_has_the_cli_defaults_and_runs_the_ddp_calibration(monkeypatch, tmp_path):
    """The Python front door calibrates as `commtune probe` does: same sizes, streams, fit minimum,
    and the DDP calibration run unless ``ddp_calibration=False`` (no ranks started here)."""
    import commtune.api as api
    import commtune.probe.ddp_calib as ddp_calib
    import commtune.probe.probe as probe_mod

    asked, ddp = [], []
    recs = [{"streams": k, "size_bytes": s, "count": s // 4, "time_s": 1e-3 + s * k ** -0.5 / 1e8, "min_s": 1e-3,
             "iters": 3} for k in probe_mod.DEFAULT_STREAMS for s in probe_mod.parse_sizes(probe_mod.DEFAULT_SIZES)]
    monkeypatch.setattr(probe_mod, "run_probe", lambda launch, sizes, streams, *a, **kw: asked.append((sizes, streams))
                        or {"world_size": 2, "engine": "gloo", "records": recs})
    monkeypatch.setattr(ddp_calib, "calibrate_ddp", lambda launch, spec, extra, steps: ddp.append(steps) or spec)
    spec, details = api.probe(2, output=tmp_path / "c.yaml")
    assert asked == [(probe_mod.parse_sizes(probe_mod.DEFAULT_SIZES), list(probe_mod.DEFAULT_STREAMS))]
    assert details["fit"]["min_fit_size_bytes"] == probe_mod.DEFAULT_FIT_MIN_SIZE
    assert ddp == [6] and (tmp_path / "c.yaml").exists()
    api.probe(2, ddp_calibration=False)
    assert ddp == [6]
    for bad in (0, 10**6, 2.5):  # bounded before anything is probed
        with pytest.raises(commtune.CommtuneError, match="ddp_steps"):
            api.probe(2, ddp_steps=bad)
    assert len(asked) == 2
    assert ddp_calib.ddp_calibration_streams(details) == (list(probe_mod.DEFAULT_STREAMS), [2, 4, 8])
