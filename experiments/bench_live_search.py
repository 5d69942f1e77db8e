"""Live search overhead: one worker group per search against one launch per trial.

Claim: a live search keeps one worker group for all its trials, so a trial costs little more than its own steps (against one launch per trial), and its best matches an exhaustive live grid's.
Runs: minutes per mode (``--quick``: about a minute). Root: ``--emulated`` yes; ``--local`` / ``--ray`` no.
Writes: ``experiments/results/bench_live_search_<local|emulated|ray>.{md,json}``.

Per-trial overhead = a trial's wall time (the search sends the configuration ->
the result is back) minus the ranks' measured warm-up and timed steps.

* ``after``: a ``--trials``-trial live search (Optuna, median pruner, the
  product's path: :func:`commtune.tuning.search_scenario`) on one
  persistent worker group; every measured trial's overhead, its median/p90,
  the group's start-up (once per search) and the search-level overhead
  ((search wall - start-up - all steps) / trials, sampler and storage included).
* ``before``: what ``--objective live`` did until now, one launch per trial
  (:func:`commtune.probe.ddp_step.time_ddp_configs` with one configuration):
  wall time minus (warm-up + timed steps) x the median step time.
* ``quality`` (emulated cluster): the live search's best against the best of
  an exhaustive live grid over the same space (measured on one group); both
  bests re-measured head to head in ``--passes`` alternating passes.

    python experiments/bench_live_search.py --local                 # local ranks
    python experiments/bench_live_search.py --emulated la            # 4-host emulated cluster (root)
    python experiments/bench_live_search.py --local --emulated la --quick
    python experiments/bench_live_search.py --ray                   # --backend ray: group of Ray actors

* ``ray`` (``--ray``): the same search with ``--backend ray`` (Ray Tune + ASHA, a
  local Ray instance) on a worker group of Ray actors started once
  (:mod:`commtune.runtime.ray_group`). From rank 0's log of the Tune trials:
  the in-group overhead of trials that ran to the end (sent -> result minus
  steps), the per-trial cycle overhead (one trial's send to the next one's,
  minus its steps: Ray Tune's trial turnaround included) and the search-level
  overhead ((search wall - start-up - all steps) / trials).

Writes ``experiments/results/bench_live_search_<local|emulated>[_quick].{json,md}``; prints the figures
and the machine load (``uptime``) they were taken under.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._common import write_json, write_md  # noqa: E402

MiB = 2**20
QUALITY_SPACE = """name: live-bench
base: ddp_default
knobs:
  fusion_policy: static
  hierarchical: false
  first_bucket_bytes: 1MiB
  fusion_threshold_bytes: {choices: [1MiB, 2MiB, 4MiB, 8MiB, 16MiB, 32MiB, 64MiB]}
  num_streams: {choices: [1, 2, 4]}
  wire_precision: {choices: [fp32, fp16]}
"""


def _load() -> str:
    return os.popen("uptime").read().strip().split("load average:")[-1].strip()


def _q(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _scenario(launch, scale: float, fwd: float, bwd: float, state=None):
    from commtune.cluster import ClusterSpec
    from commtune.models import load_model
    from commtune.scenario import Scenario
    from commtune.evaluators.live import LiveSettings, cluster_from_state

    cluster = cluster_from_state(state) if state is not None else ClusterSpec(nodes=launch.world_size, gpus_per_node=1)
    sc = Scenario(load_model("resnet50"), cluster)
    return sc, LiveSettings(launch=launch, scale=scale, forward_s=fwd, backward_s=bwd, steps=ARGS.steps,
                            warmup=ARGS.warmup)


def after(launch, space, trials: int, state=None, sampler: str = "auto") -> dict:
    from optuna.trial import TrialState

    from commtune.search.optuna_backend import open_study
    from commtune.tuning import search_scenario

    sc, settings = _scenario(launch, ARGS.scale, ARGS.forward_ms / 1e3, ARGS.backward_ms / 1e3, state)
    with tempfile.TemporaryDirectory(prefix="ct-bench-live-") as d:
        t0 = time.perf_counter()
        result, report = search_scenario(sc, space, objective_name="live", objective_options={"settings": settings},
                                         sampler=sampler, trials=trials, seed=ARGS.seed, pruner="median",
                                         storage=f"sqlite:///{d}/s.db", study_name="bench")
        wall = time.perf_counter() - t0
        from commtune.search import SearchConfig

        study, _ = open_study(SearchConfig(space=space, objective=None, storage=f"sqlite:///{d}/s.db",
                                           study_name="bench", pruner="median"))
        trials_ = study.get_trials(deepcopy=False)
    states = [t.state for t in trials_]
    m = report["measured"]
    rows = m["trial_timing"]
    over = [r["overhead_s"] for r in rows]
    steps = sum(r["steps_wall_s"] for r in rows)
    # search level: each Optuna trial's start -> end (ask, sampler, storage, pruner included) minus its steps;
    # measured trials in order (a trial replayed from the cache measured nothing)
    # (the first trial also started the worker group: its start-up is taken off)
    it = iter(rows)
    search_over = [(t.datetime_complete - t.datetime_start).total_seconds() - next(it)["steps_wall_s"]
                   for t in trials_ if t.datetime_complete and t.user_attrs.get("timed_steps", 0) > 0]
    search_over[0] -= m["group_startup_s"]
    return {"trials": trials, "complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
            "measured_trials": len(rows), "overhead_median_s": statistics.median(over), "overhead_p90_s": _q(over, 0.9),
            "overhead_max_s": max(over), "overheads_s": over, "startup_s": m["group_startup_s"], "search_wall_s": wall,
            "search_overhead_median_s": statistics.median(search_over), "search_overheads_s": search_over,
            "rebuild_median_s": statistics.median(r["rebuild_s"] for r in rows),
            "decision_wait_median_s": statistics.median(r["decision_wait_s"] for r in rows),
            "steps_wall_s": steps, "best": report["best_active"], "best_measured_s": report["measured_step_time_s"],
            "launches": m["launches"], "load": _load()}


def before(launch, configs, state=None) -> dict:
    from commtune.probe.ddp_step import time_ddp_configs
    from commtune.runtime.synthetic import synthetic_profile

    prof = synthetic_profile("resnet50", ARGS.scale, ARGS.forward_ms / 1e3, ARGS.backward_ms / 1e3)
    over, walls = [], []
    for k in configs:
        t0 = time.perf_counter()
        r = time_ddp_configs(prof, [k], launch, ARGS.steps, ARGS.warmup)[0]
        wall = time.perf_counter() - t0
        walls.append(wall)
        over.append(wall - (ARGS.warmup + ARGS.steps) * r["step_time_s"])
    return {"trials": len(configs), "overhead_median_s": statistics.median(over), "overhead_max_s": max(over),
            "overheads_s": over, "walls_s": walls, "load": _load()}


def quality(launch, space, state) -> dict:
    """Live search best vs the exhaustive live grid's best, same space, same cluster."""
    from commtune.evaluators.live import LiveEvaluator

    searched = after(launch, space, ARGS.trials, state)
    sc, settings = _scenario(launch, ARGS.scale, ARGS.forward_ms / 1e3, ARGS.backward_ms / 1e3, state)
    live = LiveEvaluator(sc.model, settings, scenario=sc)
    try:
        grid = [space.knobs_from_params(p) for p in space.grid_rows()]
        t0 = time.perf_counter()
        measured = live.evaluate_many(grid)
        grid_wall = time.perf_counter() - t0
        i = min(range(len(grid)), key=lambda j: measured[j]["step_time_s"])
        grid_best = grid[i]
        from commtune.knobs import Knobs

        search_best = live.key(Knobs.from_dict({**grid_best.to_dict(), **searched["best"]}))
        # head to head: both bests re-measured in alternating passes (fresh trials, no cache)
        h2h = {"search": [], "grid": []}
        for p in range(ARGS.passes):
            order = [("search", search_best), ("grid", grid_best)]
            for name, k in (order if p % 2 == 0 else order[::-1]):
                h2h[name].append(live._trial(live.key(k))["step_time_s"])
    finally:
        live.close()
    hs, hg = statistics.median(h2h["search"]), statistics.median(h2h["grid"])
    return {"search": searched, "grid_points": len(grid), "grid_wall_s": grid_wall,
            "grid_best": grid_best.active(), "grid_best_s": measured[i]["step_time_s"],
            "search_best_s": searched["best_measured_s"],
            "gap_found": searched["best_measured_s"] / measured[i]["step_time_s"] - 1.0,
            "h2h_search_s": h2h["search"], "h2h_grid_s": h2h["grid"], "gap_h2h": hs / hg - 1.0, "load": _load()}


def _before_configs(space, n: int):
    rows = space.grid_rows()
    return [space.knobs_from_params(rows[(i * 7) % len(rows)]) for i in range(n)]


def run_local(space) -> dict:
    from commtune.probe.launch import LaunchSpec

    launch = LaunchSpec(ranks=ARGS.ranks, timeout_s=120)
    out = {"after": after(launch, space, ARGS.trials)}
    out["before"] = before(launch, _before_configs(space, ARGS.before_trials))
    return out


def torchrun_search(state, space_text: str, trials: int) -> dict:
    """A live search under torchrun, one agent per emulated host (c10d rendezvous on host 0)."""
    import json

    from commtune.emulation.torchrun import run_torchrun

    with tempfile.TemporaryDirectory(prefix="ct-bench-tr-") as d:
        sp = Path(d) / "space.yaml"
        sp.write_text(space_text)
        t0 = time.perf_counter()
        results = run_torchrun(state, ["-m", "commtune", "search", "--objective", "live", "--model", "resnet50",
                                       "--space", str(sp), "--trials", str(trials), "--seed", str(ARGS.seed),
                                       "--live-scale", str(ARGS.scale), "--live-forward-ms", str(ARGS.forward_ms),
                                       "--live-backward-ms", str(ARGS.backward_ms), "--live-steps", str(ARGS.steps),
                                       "--live-warmup", str(ARGS.warmup), "--workdir", d, "--json", "--quiet"],
                               port=29421, timeout_s=1800)
        wall = time.perf_counter() - t0
        rep = next(json.loads(r.stdout) for r in results if r.stdout.strip())
        orphans = _orphans(d)
        wrap_ok = _wrap_applies(rep["profile_path"])
    m = rep["measured"]
    over = [r["overhead_s"] for r in m["trial_timing"]]
    return {"trials": trials, "complete": rep["trials"], "pruned": rep.get("pruned", 0), "wall_s": wall,
            "overhead_median_s": statistics.median(over), "overhead_p90_s": _q(over, 0.9), "overhead_max_s": max(over),
            "overheads_s": over, "startup_s": m["group_startup_s"], "best": rep["best_active"],
            "best_measured_s": rep["measured_step_time_s"], "orphans": orphans, "wrap_applies": wrap_ok,
            "launch": m["live"]["launch"], "load": _load()}


def _orphans(marker: str) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                out.append(cmd[:100])
    return out


def _wrap_applies(profile_path: str) -> bool:
    """``commtune.runtime.wrap`` on the model the profile is for, in a 1-rank gloo job (a subprocess)."""
    import subprocess

    from commtune.probe.launch import free_port

    code = ("import os, warnings, torch.distributed as dist\n"
            "from commtune.runtime import wrap\n"
            "from commtune.runtime.synthetic import SyntheticModel, synthetic_profile\n"
            "from commtune.models import load_model\n"
            f"os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='{free_port()}')\n"
            "dist.init_process_group('gloo', rank=0, world_size=1)\nwarnings.simplefilter('ignore')\n"
            f"wrap(SyntheticModel(synthetic_profile(load_model('resnet50'), 1.0)), {profile_path!r})\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600).returncode == 0


def run_emulated(space, prefix: str) -> dict:
    from commtune.emulation import EmulatedCluster, down, up
    from commtune.probe.launch import LaunchSpec

    state = up(EmulatedCluster.parse(ARGS.hosts, ARGS.bw, per_stream=ARGS.per_stream, prefix=prefix), replace=True)
    try:
        launch = LaunchSpec(state=state, timeout_s=180)
        out = {"cluster": f"{ARGS.hosts} hosts, {ARGS.bw}, per-stream {ARGS.per_stream}"}
        out["quality"] = quality(launch, space, state)
        out["after"] = out["quality"]["search"]
        out["before"] = before(launch, _before_configs(space, ARGS.before_trials), state)
        out["torchrun"] = torchrun_search(state, QUALITY_SPACE, ARGS.trials)
    finally:
        down(prefix)
    return out


def run_ray(space) -> dict:
    """``--backend ray`` with ASHA on a Ray actor worker group (local Ray instance)."""
    import shutil

    from optuna.trial import TrialState

    from commtune.probe.launch import LaunchSpec
    from commtune.runtime import ray_group
    from commtune.search import SearchConfig
    from commtune.search.optuna_backend import open_study
    from commtune.tuning import search_scenario

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    groups = []

    class Counted(ray_group.RayWorkerGroup):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            groups.append(self)

    ray_group.RayWorkerGroup = Counted
    launch = LaunchSpec(ranks=ARGS.ranks, timeout_s=120)
    sc, settings = _scenario(launch, ARGS.scale, ARGS.forward_ms / 1e3, ARGS.backward_ms / 1e3)
    temp = tempfile.mkdtemp(prefix="ctrb", dir="/tmp")  # short: Ray's socket paths
    try:
        with tempfile.TemporaryDirectory(prefix="ct-bench-ray-") as d:
            t0 = time.perf_counter()
            result, report = search_scenario(sc, space, backend="ray", objective_name="live",
                                             objective_options={"settings": settings}, trials=ARGS.trials,
                                             seed=ARGS.seed, pruner="median", concurrency=1, ray_temp_dir=temp,
                                             storage=f"sqlite:///{d}/s.db", study_name="bench")
            wall = time.perf_counter() - t0
            study = open_study(SearchConfig(space=space, objective=None, storage=f"sqlite:///{d}/s.db",
                                            study_name="bench", pruner="median"))
            states = [t.state for t in study.get_trials(deepcopy=False)]
    finally:
        ray_group.RayWorkerGroup = Counted.__mro__[1]
        shutil.rmtree(temp, ignore_errors=True)
    g = groups[0]
    log = g.final[0]["log"][: ARGS.trials]  # the Tune trials (the report's re-measurements follow)
    inner = [r["ended"] - r["sent"] - r["steps_wall_s"] for r in log if not r["stopped"]]
    cycle = [b["sent"] - a["sent"] - a["steps_wall_s"] for a, b in zip(log, log[1:])]
    steps = sum(r["steps_wall_s"] for r in log)
    return {"trials": ARGS.trials, "complete": states.count(TrialState.COMPLETE),
            "pruned": states.count(TrialState.PRUNED), "asha_stopped": sum(r["stopped"] for r in log),
            "groups_started": len(groups), "rank_processes": len(set(g.pids)), "placement": g.strategy,
            "startup_s": g.startup_s, "search_wall_s": wall,
            "inner_overhead_median_s": statistics.median(inner) if inner else None, "inner_overheads_s": inner,
            "cycle_overhead_median_s": statistics.median(cycle), "cycle_overhead_p90_s": _q(cycle, 0.9),
            "cycle_overheads_s": cycle, "search_overhead_per_trial_s": (wall - g.startup_s - steps) / len(log),
            "steps_wall_s": steps, "best": report["best_active"], "best_measured_s": report["measured_step_time_s"],
            "launches": report["measured"]["launches"], "load": _load()}


def _md(res: dict) -> str:
    lines = ["# Live search: per-trial overhead (one worker group per search vs one launch per trial)", "",
             f"Settings: synthetic resnet50 x{ARGS.scale}, forward {ARGS.forward_ms:g} ms, backward "
             f"{ARGS.backward_ms:g} ms, {ARGS.warmup} warm-up + {ARGS.steps} timed steps, median pruner.", "",
             "| where | before: median overhead/trial | after: median (p90, max) | group start-up (once) | "
             "search-level: median per Optuna trial | trials (complete/pruned) | load |", "|---|---|---|---|---|---|---|"]
    if not ("local" in res or "emulated" in res):
        lines = lines[:4]
    for where in ("local", "emulated"):
        if where not in res:
            continue
        a, b = res[where]["after"], res[where]["before"]
        lines.append(f"| {where} | {b['overhead_median_s']:.2f} s ({b['trials']} launches) | "
                     f"{a['overhead_median_s']:.3f} s ({a['overhead_p90_s']:.3f}, {a['overhead_max_s']:.3f}) | "
                     f"{a['startup_s']:.1f} s | {a['search_overhead_median_s']:.3f} s | {a['trials']} "
                     f"({a['complete']}/{a['pruned']}) | {a['load']} |")
    if "ray" in res:
        r = res["ray"]
        inner = "n/a" if r["inner_overhead_median_s"] is None else f"{r['inner_overhead_median_s']:.3f} s"
        lines += ["", f"Ray (`--backend ray`, ASHA, local Ray instance, {ARGS.ranks} rank actors, {r['placement']}): "
                  f"{r['trials']} trials ({r['complete']} complete / {r['pruned']} pruned in the study; "
                  f"{r['asha_stopped']} stopped early by ASHA), {r['groups_started']} worker group "
                  f"({r['rank_processes']} rank processes) started once in {r['startup_s']:.1f} s; per-trial "
                  f"overhead inside the group (trials run to the end) {inner}; per-trial cycle overhead "
                  f"(next trial's start - this one's - its steps, Ray Tune's trial turnaround included) median "
                  f"{r['cycle_overhead_median_s']:.2f} s (p90 {r['cycle_overhead_p90_s']:.2f}); search level "
                  f"{r['search_overhead_per_trial_s']:.2f} s/trial; search wall {r['search_wall_s']:.0f} s; "
                  f"load {r['load']}."]
    if "emulated" in res:
        q = res["emulated"]["quality"]
        lines += ["", f"Search quality ({res['emulated']['cluster']}): live search best {q['search_best_s'] * 1e3:.1f} ms "
                  f"({q['search']['best']}), exhaustive live grid ({q['grid_points']} points) best "
                  f"{q['grid_best_s'] * 1e3:.1f} ms ({q['grid_best']}): gap {q['gap_found'] * 100:+.1f} % as found; "
                  f"re-measured head to head ({ARGS.passes} passes) {q['gap_h2h'] * 100:+.1f} %."]
        t = res["emulated"]["torchrun"]
        lines += ["", f"torchrun ({t['launch']}, c10d rendezvous on host 0): {t['trials']} trials, {t['complete']} "
                  f"complete, {t['pruned']} pruned; per-trial overhead median {t['overhead_median_s']:.3f} s "
                  f"(p90 {t['overhead_p90_s']:.3f}); start-up {t['startup_s']:.1f} s; orphan processes: "
                  f"{len(t['orphans'])}; wrap applies the profile: {t['wrap_applies']}; load {t['load']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local", action="store_true", help="local ranks")
    p.add_argument("--emulated", metavar="PREFIX", help="a 4-host emulated cluster with this namespace prefix (root)")
    p.add_argument("--ray", action="store_true", help="--backend ray: a worker group of Ray actors (local Ray)")
    p.add_argument("--quick", action="store_true", help="fewer trials")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--bw", default="1gbit")
    p.add_argument("--per-stream", default="300mbit")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--before-trials", type=int, default=6)
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--forward-ms", type=float, default=50.0)
    p.add_argument("--backward-ms", type=float, default=100.0)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    ARGS = p.parse_args(argv)
    if ARGS.quick:
        ARGS.trials, ARGS.before_trials, ARGS.passes = 6, 2, 2
    if not (ARGS.local or ARGS.emulated or ARGS.ray):
        ARGS.local = True
    from commtune.search.space import load_space

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(QUALITY_SPACE)
    space = load_space(fh.name)
    os.unlink(fh.name)
    res: dict = {"settings": {k: v for k, v in vars(ARGS).items()}, "load_start": _load()}
    if ARGS.local:
        res["local"] = run_local(space)
    if ARGS.emulated:
        res["emulated"] = run_emulated(space, ARGS.emulated)
    if ARGS.ray:
        res["ray"] = run_ray(space)
    suffix = "".join(f"_{w}" for w in ("local", "emulated", "ray") if w in res) + ("_quick" if ARGS.quick else "")
    write_json(f"bench_live_search{suffix}.json", res)
    text = _md(res)
    write_md(f"bench_live_search{suffix}.md", text)
    print(text)
    return 0


ARGS: argparse.Namespace


if __name__ == "__main__":
    sys.exit(main())
