"""Every bad input: exit status 2, exactly one stderr line naming the bad value,
no traceback, nothing created or changed, and quickly.

The table runs the CLI in-process (``commtune.cli.main``) from a scratch folder
that holds a few prepared files; the folder is snapshotted before and after.
Paths that must not be created live under that folder (``missing/...``).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from commtune.cli import main
from commtune.profiles import save_profile

from conftest import make_profile

WALL_S = 20.0  # per case, on a loaded 2-core machine; the slowest check is a model load

BINARY = bytes(range(256)) * 4  # not UTF-8

# (id, argv, strings the one stderr line must contain, modules to hide)
CASES: list[tuple[str, list[str], tuple[str, ...], tuple[str, ...]]] = [
    # --- top level and parsing
    ("unknown-command", ["nosuch"], ("nosuch",), ()),
    ("unknown-flag", ["simulate", "--model", "resnet50", "--nosuch"], ("--nosuch",), ()),
    # --- models
    ("models-unknown", ["models", "nosuchnet"], ("nosuchnet",), ()),
    ("models-input-zero", ["models", "resnet50", "--input-size", "0"], ("0",), ()),
    ("models-input-huge", ["models", "resnet50", "--input-size", "1000000000"], ("1000000000",), ()),
    ("models-input-small", ["models", "resnet50", "--input-size", "16"], ("16", "32"), ()),
    ("models-binary-file", ["models", "binary.yaml"], ("binary.yaml", "UTF-8"), ()),
    # --- simulate: values that parse but mean nothing
    ("cycle-nan", ["simulate", "--model", "resnet50", "--cycle-ms", "nan"], ("nan", "cycle"), ()),
    ("cycle-inf", ["simulate", "--model", "resnet50", "--cycle-ms", "inf"], ("inf",), ()),
    ("cycle-negative", ["simulate", "--model", "resnet50", "--cycle-ms", "-1"], ("-1",), ()),
    ("fusion-huge", ["simulate", "--model", "resnet50", "--fusion", "1e300"], ("--fusion",), ()),
    ("fusion-negative", ["simulate", "--model", "resnet50", "--fusion=-5MB"], ("-5MB",), ()),
    ("fusion-bits", ["simulate", "--model", "resnet50", "--fusion", "25Mb"], ("25Mb", "bytes"), ()),
    ("first-bucket-word", ["simulate", "--model", "resnet50", "--first-bucket", "big"], ("big",), ()),
    ("streams-zero", ["simulate", "--model", "resnet50", "--streams", "0"], ("0", "16"), ()),
    ("streams-many", ["simulate", "--model", "resnet50", "--streams", "17"], ("17", "16"), ()),
    ("streams-fraction", ["simulate", "--model", "resnet50", "--streams", "2.5"], ("2.5",), ()),
    ("negotiation-bad", ["simulate", "--model", "resnet50", "--negotiation", "gossip"], ("gossip",), ()),
    ("wire-bad", ["simulate", "--model", "resnet50", "--wire-precision", "fp8"], ("fp8",), ()),
    ("bw-tiny", ["simulate", "--model", "resnet50", "--bw", "1e-300bit"], ("1e-300bit", "Mbit"), ()),
    ("bw-zero", ["simulate", "--model", "resnet50", "--bw", "0gbit"], ("0gbit",), ()),
    ("bw-huge", ["simulate", "--model", "resnet50", "--bw", "1e30gbit"], ("1e30gbit",), ()),
    ("bw-no-unit", ["simulate", "--model", "resnet50", "--bw", "32"], ("32",), ()),
    ("bw-list", ["simulate", "--model", "resnet50", "--bw", "32gbit,"], ("32gbit,",), ()),
    ("nodes-float", ["simulate", "--model", "resnet50", "--nodes", "1e18"], ("1e18",), ()),
    ("nodes-huge", ["simulate", "--model", "resnet50", "--nodes", "1000000000000000000"], ("1000000000000000000",), ()),
    ("gpus-huge", ["simulate", "--model", "resnet50", "--gpus-per-node", "100000"], ("100000",), ()),
    ("batch-huge", ["simulate", "--model", "resnet50", "--batch-size", "1000000000000"], ("1000000000000",), ()),
    ("batch-float", ["simulate", "--model", "resnet50", "--batch-size", "1e12"], ("1e12",), ()),
    ("input-huge", ["simulate", "--model", "resnet50", "--input-size", "1000000000"], ("1000000000",), ()),
    ("latency-nan", ["simulate", "--model", "resnet50", "--latency", "nan"], ("nan",), ()),
    ("latency-huge", ["simulate", "--model", "resnet50", "--latency", "1e9s"], ("1e9s",), ()),
    ("per-stream-zero", ["simulate", "--model", "resnet50", "--per-stream", "0mbit"], ("0mbit",), ()),
    ("precision-bad", ["simulate", "--model", "resnet50", "--precision", "fp8"], ("fp8",), ()),
    ("device-bad", ["simulate", "--model", "resnet50", "--device", "X100"], ("X100",), ()),
    ("intra-bad", ["simulate", "--model", "resnet50", "--intra", "warp"], ("warp",), ()),
    ("model-unknown", ["simulate", "--model", "resnet5"], ("resnet5",), ()),
    ("model-binary", ["simulate", "--model", "binary.yaml"], ("binary.yaml",), ()),
    ("cluster-unknown", ["simulate", "--model", "resnet50", "--cluster", "vpc-33gbit"], ("vpc-33gbit",), ()),
    ("cluster-binary", ["simulate", "--model", "resnet50", "--cluster", "binary.yaml"], ("binary.yaml", "UTF-8"), ()),
    ("cluster-missing", ["simulate", "--model", "resnet50", "--cluster", "missing/c.yaml"], ("missing/c.yaml",), ()),
    ("cluster-nan-bw", ["simulate", "--model", "resnet50", "--cluster", "nan_cluster.yaml"], ("nan",), ()),
    ("cluster-file-preset-nodes", ["simulate", "--model", "resnet50", "--cluster", "preset_nodes.yaml"],
     ("abc", "nodes"), ()),
    ("model-file-nan", ["simulate", "--model", "nan_model.yaml"], ("nan",), ()),
    ("hierarchical-flat", ["simulate", "--model", "resnet50", "--hierarchical", "--flat"], ("--hierarchical", "--flat"), ()),
    ("preset-bw-cap", ["simulate", "--model", "resnet50", "--cluster", "vpc-32gbit", "--bw", "100gbit"],
     ("100gbit", "--per-stream"), ()),
    ("trace-missing-dir", ["simulate", "--model", "resnet50", "--trace", "missing/dir/x.json"], ("missing/dir",), ()),
    ("trace-proc", ["simulate", "--model", "resnet50", "--trace", "/proc/x.json"], ("/proc",), ()),
    ("trace-is-dir", ["simulate", "--model", "resnet50", "--trace", "."], ("'.'",), ()),
    # --- search
    ("search-trials-zero", ["search", "--model", "resnet50", "--trials", "0", "--storage", "memory", "--no-profile"],
     ("0",), ()),
    ("search-trials-huge", ["search", "--model", "resnet50", "--trials", "10000000000", "--storage", "memory",
                            "--no-profile"], ("10000000000",), ()),
    ("search-seed-negative", ["search", "--model", "resnet50", "--seed", "-1", "--storage", "memory", "--no-profile"],
     ("-1",), ()),
    ("search-seed-huge", ["search", "--model", "resnet50", "--seed", "99999999999", "--storage", "memory",
                          "--no-profile"], ("99999999999",), ()),
    ("search-screen-huge", ["search", "--model", "resnet50", "--screen", "1000000000000", "--storage", "memory",
                            "--no-profile"], ("1000000000000",), ()),
    ("search-grid-huge", ["search", "--model", "resnet50", "--sampler", "grid", "--grid-points", "1000000",
                          "--storage", "memory", "--no-profile"], ("1000000",), ()),
    ("search-grid-one", ["search", "--model", "resnet50", "--sampler", "grid", "--grid-points", "1",
                         "--storage", "memory", "--no-profile"], ("1",), ()),
    ("search-sampler-bad", ["search", "--model", "resnet50", "--sampler", "tpee"], ("tpee",), ()),
    ("search-backend-bad", ["search", "--model", "resnet50", "--backend", "dask"], ("dask",), ()),
    ("search-cmaes-missing", ["search", "--model", "resnet50", "--sampler", "cmaes", "--trials", "3", "--quiet",
                              "--workdir", "wd"], ("cmaes", "commtune[cmaes]"), ("cmaes",)),
    ("search-gp-missing", ["search", "--model", "resnet50", "--sampler", "gp", "--trials", "3", "--quiet",
                           "--workdir", "wd"], ("gp", "commtune[gp]"), ("torch",)),
    ("search-ray-missing", ["search", "--model", "resnet50", "--backend", "ray", "--trials", "3", "--quiet",
                            "--workdir", "wd"], ("ray", "commtune[ray]"), ("ray",)),
    ("search-output-proc", ["search", "--model", "resnet50", "--trials", "3", "--storage", "memory", "-o",
                            "/proc/x.json"], ("/proc",), ()),
    ("search-output-missing-dir", ["search", "--model", "resnet50", "--trials", "3", "--storage", "memory", "-o",
                                   "missing/dir/x.json"], ("missing/dir",), ()),
    ("search-no-profile-output", ["search", "--model", "resnet50", "--no-profile", "-o", "x.json",
                                  "--storage", "memory"], ("--no-profile", "-o"), ()),
    ("search-bw-empty-entry", ["search", "--model", "resnet50", "--bw", "32gbit,", "--storage", "memory",
                               "--no-profile"], ("32gbit,",), ()),
    ("search-bw-double-comma", ["search", "--model", "resnet50", "--bw", "10gbit,,32gbit", "--storage", "memory",
                                "--no-profile"], ("10gbit,,32gbit",), ()),
    ("search-storage-scheme", ["search", "--model", "resnet50", "--storage", "bogus.txt"], ("bogus.txt",), ()),
    ("search-storage-missing-dir", ["search", "--model", "resnet50", "--storage", "sqlite:///missing/dir/s.db",
                                    "--no-profile"], ("missing/dir",), ()),
    ("search-storage-not-db", ["search", "--model", "resnet50", "--storage", "sqlite:///binary.yaml",
                               "--no-profile", "--quiet"], ("binary.yaml",), ()),
    ("search-storage-driver", ["search", "--model", "resnet50", "--storage", "nosuchdb://host/x",
                               "--no-profile", "--quiet"], ("nosuchdb://host/x",), ()),
    ("search-space-unknown", ["search", "--model", "resnet50", "--space", "nospace"], ("nospace",), ()),
    ("search-space-grid-huge", ["search", "--model", "resnet50", "--space", "big_grid.yaml", "--sampler", "grid",
                                "--storage", "memory", "--no-profile"], ("100,000,000", "1,024"), ()),
    ("search-space-binary", ["search", "--model", "resnet50", "--space", "binary.yaml"], ("binary.yaml",), ()),
    ("search-timeout-nan", ["search", "--model", "resnet50", "--timeout", "nan"], ("nan",), ()),
    ("search-objective-bad", ["search", "--model", "resnet50", "--objective", "vibes"], ("vibes",), ()),
    ("search-concurrency-no-ray", ["search", "--model", "resnet50", "--concurrency", "4", "--storage", "memory",
                                   "--no-profile"], ("--concurrency", "ray"), ()),
    ("search-live-flag-without-live", ["search", "--model", "resnet50", "--live-steps", "3", "--storage", "memory",
                                       "--no-profile"], ("--live-steps", "live"), ()),
    ("search-seq-len-no-factory", ["search", "--model", "resnet50", "--seq-len", "128", "--storage", "memory",
                                   "--no-profile"], ("--seq-len", "--model-factory"), ()),
    ("search-live-engine-no-live", ["search", "--model", "resnet50", "--live-engine", "nccl", "--storage", "memory",
                                    "--no-profile"], ("--live-engine", "live"), ()),
    ("search-workdir-file", ["search", "--model", "resnet50", "--workdir", "binary.yaml/sub"], ("binary.yaml",), ()),
    ("search-grid-points-no-grid", ["search", "--model", "resnet50", "--grid-points", "8", "--storage", "memory",
                                    "--no-profile"], ("--grid-points", "--sampler grid"), ()),
    ("search-ray-address-no-ray", ["search", "--model", "resnet50", "--ray-address", "auto", "--storage", "memory",
                                   "--no-profile"], ("--ray-address", "ray"), ()),
    ("search-several-bw-one-file", ["search", "--model", "resnet50", "--bw", "10gbit,32gbit", "-o", "p.json",
                                    "--storage", "memory"], ("p.json", "{bw}"), ()),
    ("search-nodes-zero", ["search", "--model", "resnet50", "--nodes", "0"], ("0",), ()),
    # --- show / export
    ("show-binary", ["show", "binary.json"], ("binary.json", "UTF-8"), ()),
    ("show-missing", ["show", "missing/p.json"], ("missing/p.json",), ()),
    ("show-dir", ["show", "."], ("'.'",), ()),
    ("show-empty", ["show", "empty.json"], ("empty.json",), ()),
    ("show-not-profile", ["show", "list.json"], ("list.json",), ()),
    ("export-binary", ["export", "binary.json", "--format", "ddp"], ("binary.json",), ()),
    ("export-format-bad", ["export", "good.json", "--format", "tensorflow"], ("tensorflow",), ()),
    ("export-output-proc", ["export", "good.json", "--format", "ddp", "-o", "/proc/x.env"], ("/proc",), ()),
    ("export-output-missing-dir", ["export", "good.json", "--format", "ddp", "-o", "missing/dir/x.env"],
     ("missing/dir",), ()),
    # --- plot
    ("plot-sweep-grid-huge", ["plot", "sweep", "--model", "resnet50", "--grid-points", "1000000", "-o", "s.png"],
     ("1000000",), ()),
    ("plot-sweep-total-grid", ["plot", "sweep", "--model", "resnet50", "--bws", "1gbit,2gbit,3gbit,4gbit",
                               "--grid-points", "60", "-o", "s.png"], ("2,764,800", "1,000,000"), ()),
    ("plot-sweep-bws-empty", ["plot", "sweep", "--model", "resnet50", "--bws", "10gbit,32gbit,", "-o", "s.png"],
     ("10gbit,32gbit,",), ()),
    ("plot-sweep-output-proc", ["plot", "sweep", "--model", "resnet50", "-o", "/proc/s.png"], ("/proc",), ()),
    ("plot-format", ["plot", "heatmap", "--model", "resnet50", "-o", "h.txt"], ("h.txt",), ()),
    ("plot-heatmap-points-huge", ["plot", "heatmap", "--model", "resnet50", "--points", "1000000000", "-o", "h.png"],
     ("1000000000",), ()),
    ("plot-heatmap-streams-huge", ["plot", "heatmap", "--model", "resnet50", "--max-streams", "1000", "-o", "h.png"],
     ("1000",), ()),
    ("plot-heatmap-thresholds", ["plot", "heatmap", "--model", "resnet50", "--min-threshold", "1GiB",
                                 "--max-threshold", "1KiB", "-o", "h.png"], ("1GiB", "1KiB"), ()),
    ("plot-history-missing-db", ["plot", "history", "--storage", "sqlite:///missing.db", "-o", "h.png"],
     ("missing.db",), ()),
    ("plot-history-binary", ["plot", "history", "binary.json", "-o", "h.png"], ("binary.json",), ()),
    ("plot-fidelity-binary", ["plot", "fidelity", "binary.csv", "-o", "f.png"], ("binary.csv",), ()),
    ("plot-fidelity-band-nan", ["plot", "fidelity", "points.csv", "--band", "nan", "-o", "f.png"], ("nan",), ()),
    ("plot-timeline-cycle-nan", ["plot", "timeline", "--model", "resnet50", "--cycle-ms", "nan", "-o", "t.png"],
     ("nan",), ()),
    # --- cluster / probe / validate / profile-model (all fail before touching namespaces or launching ranks)
    ("cluster-up-hosts", ["cluster", "up", "--hosts", "1000", "--bw", "1gbit", "--prefix", "ha"], ("1000",), ()),
    ("cluster-up-bw", ["cluster", "up", "--hosts", "2", "--bw", "0gbit", "--prefix", "ha"], ("0gbit",), ()),
    ("cluster-prefix", ["cluster", "status", "--prefix", "../etc"], ("../etc",), ()),
    ("cluster-up-latency", ["cluster", "up", "--hosts", "2", "--bw", "1gbit", "--latency", "5s", "--prefix", "ha"],
     ("5",), ()),
    ("probe-fit-min-size", ["probe", "--ranks", "2", "--fit-min-size", "huge"], ("huge",), ()),
    ("probe-sizes-empty-entry", ["probe", "--ranks", "2", "--sizes", "1MB,,4MB"], ("1MB,,4MB",), ()),
    ("validate-buckets-empty-entry", ["validate", "--cluster", "calib.yaml", "--ranks", "2", "--buckets", "1MiB,"],
     ("1MiB,",), ()),
    ("validate-wire", ["validate", "--cluster", "calib.yaml", "--ranks", "2", "--wire", "fp8"], ("fp8",), ()),
    ("probe-sizes-huge", ["probe", "--ranks", "2", "--sizes", "1KB:1TB"], ("1KB:1TB", "2 GiB"), ()),
    ("probe-ranks-one", ["probe", "--ranks", "1"], ("1",), ()),
    ("probe-ddp-steps-huge", ["probe", "--ranks", "2", "--ddp-steps", "100000"], ("100000", "10,000"), ()),
    ("probe-sizes-bad", ["probe", "--ranks", "2", "--sizes", "big:small"], ("big",), ()),
    ("probe-iters-huge", ["probe", "--ranks", "2", "--iters", "1000000000"], ("1000000000",), ()),
    ("probe-timeout-nan", ["probe", "--ranks", "2", "--timeout", "nan"], ("nan",), ()),
    ("probe-output-proc", ["probe", "--ranks", "2", "-o", "/proc/c.yaml"], ("/proc",), ()),
    ("probe-refit-not-calibration", ["probe", "--refit", "nan_cluster.yaml"], ("nan_cluster.yaml", "commtune probe"), ()),
    ("probe-refit-binary", ["probe", "--refit", "binary.yaml"], ("binary.yaml",), ()),
    ("probe-refit-with-ranks", ["probe", "--refit", "nan_cluster.yaml", "--ranks", "2"], ("--ranks",), ()),
    ("validate-binary", ["validate", "--cluster", "binary.yaml", "--ranks", "2"], ("binary.yaml",), ()),
    ("validate-plot-proc", ["validate", "--cluster", "calib.yaml", "--ranks", "2", "--plot", "/proc/v.png"],
     ("/proc",), ()),
    ("validate-scale-nan", ["validate", "--cluster", "calib.yaml", "--ranks", "2", "--scale", "nan"], ("nan",), ()),
    ("validate-held-out-huge", ["validate", "--cluster", "calib.yaml", "--ranks", "2", "--held-out", "100000000"],
     ("100,000,000",), ()),
    ("validate-one-config", ["validate", "--cluster", "calib.yaml", "--ranks", "2", "--configs", "25MiB:2"], ("1",), ()),
    ("profile-model-ext", ["profile-model", "x:y", "-o", "model.txt"], ("model.txt",), ()),
    ("profile-model-batch", ["profile-model", "x:y", "-o", "m.yaml", "--batch-size", "0"], ("0",), ()),
    ("profile-model-output-proc", ["profile-model", "x:y", "-o", "/proc/m.yaml"], ("/proc",), ()),
    ("space-base-mapping", ["search", "--model", "resnet50", "--space", "base_map.yaml"], ("base", "ddp_default"), ()),
    ("export-output-proc-json", ["export", "good.json", "--format", "ddp", "-o", "/proc/t.json"],
     ("/proc", "not a place for files"), ()),
    # --- an optional dependency that is missing: the pip install line, before anything is created
    ("storage-pg-no-driver", ["search", "--model", "resnet50", "--storage", "postgresql://u@localhost/db",
                              "--trials", "2"], ("psycopg", "pip install 'commtune[postgres]'"), ("psycopg",)),
    ("probe-no-torch", ["probe", "--ranks", "2"], ("torch", "pip install 'commtune[torch]'"), ("torch",)),
    ("validate-no-torch", ["validate", "--cluster", "calib.yaml", "--ranks", "2"],
     ("torch", "pip install 'commtune[torch]'"), ("torch",)),
]


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha1(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    (tmp_path / "binary.json").write_bytes(BINARY)
    (tmp_path / "binary.yaml").write_bytes(BINARY)
    (tmp_path / "binary.csv").write_bytes(BINARY)
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[1, 2]\n")
    (tmp_path / "points.csv").write_text("predicted,measured\n0.1,0.11\n0.2,0.19\n")
    (tmp_path / "nan_cluster.yaml").write_text("inter_bw_Bps: .nan\nnodes: 4\n")
    (tmp_path / "preset_nodes.yaml").write_text("preset: vpc-32gbit\nnodes: abc\n")
    (tmp_path / "nan_model.yaml").write_text("name: m\ntensors:\n  - {name: a, numel: .nan}\n")
    (tmp_path / "big_grid.yaml").write_text("knobs:\n  fusion_threshold_bytes: {low: 1, high: 1e9, log: true, "
                                            "grid: 100000000}\n")
    (tmp_path / "base_map.yaml").write_text("base: {num_streams: 6}\nknobs:\n  num_streams: 2\n")
    (tmp_path / "calib.yaml").write_text("inter_bw: 1gbit\nnodes: 2\ngpus_per_node: 1\n")
    save_profile(make_profile(), tmp_path / "good.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv,needles,hide", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv, needles, hide, scratch, capsys, monkeypatch):
    for mod in hide:  # an optional dependency that is not installed
        for name in [m for m in sys.modules if m == mod or m.startswith(mod + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, mod, None)
    before = _snapshot(scratch)
    t0 = time.monotonic()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert _snapshot(scratch) == before, "files were created or changed"
    assert elapsed < WALL_S, f"took {elapsed:.1f} s"


def test_table_size():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert {"models", "simulate", "search", "show", "export", "plot", "cluster", "probe", "validate",
            "profile-model"} <= commands


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_resume_says_what_it_resumed_and_refuses_another_sampler(scratch, capsys):
    base = ["search", "--model", "resnet50", "--storage", "sqlite:///s.db", "--study", "one", "--screen", "64",
            "--no-profile", "--trials", "4"]
    code, out, _ = _run(base, capsys)
    assert code == 0 and "(4 new trials)" in out
    code, out, _ = _run([*base[:-1], "6"], capsys)
    assert code == 0 and "resumed study one" in out and "4 trials from earlier runs, 2 new" in out
    import optuna

    def studies():  # SQLite may checkpoint its WAL when a connection closes: compare content, not bytes
        return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries("sqlite:///s.db")}

    before, files = studies(), {k for k in _snapshot(scratch) if not k.startswith("s.db")}
    code, _, err = _run([*base, "--sampler", "random"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "made by sampler 'auto', not 'random'" in err and "--sampler auto" in err
    assert studies() == before == {"one": 6}
    assert {k for k in _snapshot(scratch) if not k.startswith("s.db")} == files
    # without --study, another sampler or seed is a study of its own
    from commtune.tuning import study_name_for
    from commtune.scenario import Scenario
    from commtune.models import load_model
    from commtune.cluster import make_cluster
    from commtune.search.space import load_space

    sc, sp = Scenario(load_model("resnet50"), make_cluster()), load_space("default")
    names = {study_name_for(sc, sp, "simulator", s, seed) for s in ("auto", "random") for seed in (0, 1)}
    assert len(names) == 4


def test_wrap_refuses_a_binary_profile(scratch):
    torch = pytest.importorskip("torch")
    from commtune.errors import CommtuneError
    from commtune.runtime import wrap

    with pytest.raises(CommtuneError, match="binary.json.*not a UTF-8 text file"):
        wrap(torch.nn.Linear(2, 2), "binary.json")


@pytest.mark.slow  # the grid's round-robin rows run one by one through the reference scheduler (~1 min here)
def test_grid_memory_bound():
    """The bound on grid sizes comes from the memory one configuration takes:
    build and simulate a grid, measure the peak, and check BYTES_PER_CONFIG covers it;
    a grid over the bound is refused before anything is allocated."""
    import tracemalloc

    from commtune.cluster import make_cluster
    from commtune.errors import CommtuneError
    from commtune.limits import BYTES_PER_CONFIG, MAX_CONFIGS
    from commtune.models import load_model
    from commtune.scenario import Scenario
    from commtune.search.space import load_space

    space = load_space("default")
    sim = Scenario(load_model("resnet50"), make_cluster()).simulator
    sim.run_batch(space.knob_arrays(space.grid_rows(points=2)))  # warm caches outside the measurement
    tracemalloc.start()
    try:
        rows = space.grid_rows(points=16)
        sim.run_batch(space.knob_arrays(rows))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) == space.grid_size(points=16) > 10_000
    assert peak / len(rows) <= BYTES_PER_CONFIG
    assert MAX_CONFIGS * BYTES_PER_CONFIG <= 2 * 2**30  # the largest accepted grid fits in 2 GiB
    assert space.grid_size(points=1024) > MAX_CONFIGS
    tracemalloc.start()
    try:
        with pytest.raises(CommtuneError, match="out of range"):
            space.grid_rows(points=1024)
        refused_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused_peak < 10 * 2**20


def test_tables_keep_their_width_in_a_pipe(scratch, capsys):
    code, out, _ = _run(["search", "--model", "resnet50", "--bw", "10gbit,32gbit", "--trials", "3", "--screen", "0",
                         "--storage", "memory", "--no-profile", "--quiet"], capsys)
    assert code == 0
    assert "…" not in out and max(len(line) for line in out.splitlines()) > 80


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["presets", "--json"], ["presets"], ["models", "--json"]])
def test_closed_pipe_is_quiet(argv, tmp_path):
    """`commtune presets --json | head`: the reader is gone before commtune writes."""
    import subprocess

    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "commtune", *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                           cwd=tmp_path, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 141 and p.stderr == ""


def test_help_lists_the_ranges(capsys):
    from commtune.limits import RANGES

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for r in RANGES.values():
        assert f"{r.flags}" in out and r.describe() in out
    assert "--cycle-ms" in out and "[0 ms, 1000 ms]" in out


# --- files that are not regular files (issue 28 §5) ------------------------------------------
# Each command that reads a file gets a FIFO, a folder, /dev/zero, /dev/urandom and an oversize
# (sparse) file in its place. All cases run in ONE child process under a timeout, with its address
# space capped, so a reader that blocks (FIFO) or reads forever (/dev/zero) fails the test instead
# of hanging or exhausting the machine.

SPECIAL_KINDS = ("fifo", "dir", "zero", "urandom", "big")
#: (id, argv with {f} for the file, suffix the file gets)
FILE_READERS: list[tuple[str, list[str], str]] = [
    ("show", ["show", "{f}"], ".json"),
    ("export", ["export", "{f}", "--format", "ddp"], ".json"),
    ("simulate-cluster", ["simulate", "--model", "resnet50", "--cluster", "{f}"], ".yaml"),
    ("simulate-model", ["simulate", "--model", "{f}"], ".yaml"),
    ("models-file", ["models", "{f}"], ".yaml"),
    ("validate-calib", ["validate", "--cluster", "{f}", "--ranks", "2"], ".yaml"),
    ("probe-refit", ["probe", "--refit", "{f}"], ".yaml"),
    ("search-space", ["search", "--model", "resnet50", "--space", "{f}", "--trials", "1"], ".yaml"),
    ("search-storage", ["search", "--model", "resnet50", "--storage", "sqlite:///{f}", "--trials", "1"], ".db"),
    ("search-model-factory", ["search", "--objective", "live", "--space", "ddp",
                              "--model-factory", "{f}:make", "--trials", "1"], ".py"),
    ("plot-history-json", ["plot", "history", "{f}", "-o", "h.png"], ".json"),
    ("plot-history-storage", ["plot", "history", "--storage", "sqlite:///{f}", "-o", "h.png"], ".db"),
    ("plot-fidelity", ["plot", "fidelity", "{f}", "-o", "f.png"], ".csv"),
    ("plot-sweep-space", ["plot", "sweep", "--model", "resnet50", "--space", "{f}", "-o", "s.png"], ".yaml"),
    ("profile-model-factory", ["profile-model", "{f}:make", "-o", "m.yaml"], ".py"),
]

_DRIVER = r"""
import io, json, sys, time, contextlib, resource
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # a reader that grows without bound fails here
from commtune.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # a traceback is a failure the test reports
            code = f"raised {type(exc).__name__}: {exc}"
    out.append({"code": code, "err": err.getvalue(), "s": time.monotonic() - t0})
print(json.dumps(out))
"""


def _special(root: Path, kind: str, suffix: str) -> str:
    if kind == "zero":
        return "/dev/zero"
    if kind == "urandom":
        return "/dev/urandom"
    p = root / f"{kind}{suffix}"
    if not os.path.lexists(p):
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
        else:  # sparse: 17 MiB over the 16 MiB every reader takes, no disk used
            with open(p, "wb") as fh:
                fh.truncate(17 * 2**20)
    return str(p)


def _listing(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


def test_file_arguments_that_are_not_regular_files(tmp_path):
    import subprocess

    cases, argvs = [], []
    for rid, argv, suffix in FILE_READERS:
        for kind in SPECIAL_KINDS:
            f = _special(tmp_path, kind, suffix)
            cases.append((f"{rid}/{kind}", f))
            argvs.append([a.replace("{f}", f) for a in argv])
    before = _listing(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = []
    for (cid, f), r in zip(cases, results):
        lines = [line for line in r["err"].splitlines() if line.strip()]
        kind = cid.split("/")[1]
        want = "MiB" if kind == "big" else None
        if r["code"] != 2 or len(lines) != 1 or "Traceback" in r["err"] or f not in lines[0] \
                or (want and want not in lines[0] and "not an SQLite database" not in lines[0]) or r["s"] > 10:
            bad.append(f"{cid}: exit {r['code']}, {r['s']:.1f} s, stderr {r['err']!r}")
    assert not bad, "\n".join(bad)
    assert _listing(tmp_path) == before, "files were created or changed"
    assert len(results) == len(FILE_READERS) * len(SPECIAL_KINDS)


def test_outputs_that_are_not_regular_files_are_refused(tmp_path, monkeypatch):
    from commtune.errors import CommtuneError
    from commtune.io import atomic_write_text, check_writable

    fifo, folder = tmp_path / "out.json", tmp_path / "d.json"
    os.mkfifo(fifo)
    folder.mkdir()
    for p, kind in ((fifo, "FIFO"), (folder, "folder")):
        with pytest.raises(CommtuneError, match=kind):
            check_writable(p, "export")
        with pytest.raises(CommtuneError, match=kind):
            atomic_write_text(p, "{}")  # the rename would have replaced it
    assert fifo.is_fifo() and folder.is_dir() and sorted(os.listdir(tmp_path)) == ["d.json", "out.json"]


def test_read_text_reads_at_most_its_limit(tmp_path):
    from commtune.errors import CommtuneError
    from commtune.io import MAX_TEXT_BYTES, read_text

    p = tmp_path / "a.yaml"
    p.write_text("x" * 100)
    assert read_text(p, "cluster file", max_bytes=100) == "x" * 100
    with pytest.raises(CommtuneError, match=r"cannot read cluster file '.*a.yaml': .* MiB is more than"):
        read_text(p, "cluster file", max_bytes=99)
    assert MAX_TEXT_BYTES == 16 * 2**20
    with pytest.raises(CommtuneError, match="No such file"):
        read_text(tmp_path / "missing.yaml")


def test_missing_torch_in_the_api_is_the_install_line(monkeypatch):
    import commtune
    import commtune.runtime as rt
    from commtune.errors import CommtuneError

    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    for m in ("commtune.runtime.apply", "commtune.runtime.tuner", "commtune.runtime.hooks"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    with pytest.raises(CommtuneError, match=r"commtune\.wrap needs .*'torch'.*pip install 'commtune\[torch\]'"):
        commtune.wrap(object(), "p.json")
    with pytest.raises(CommtuneError, match=r"pip install 'commtune\[torch\]'"):
        rt.wrap  # noqa: B018 -- the lazy attribute is where the import happens
    assert rt.plan_for is not None  # torch-free parts stay usable


def test_storage_server_that_refuses_creates_no_workdir(tmp_path, monkeypatch, capsys):
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--model", "resnet50", "--storage", "postgresql://u@127.0.0.1:1/db", "--trials", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "127.0.0.1" in err
    assert os.listdir(tmp_path) == []  # no profiles/ before the refusal
