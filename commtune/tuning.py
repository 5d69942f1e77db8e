"""One search for one scenario: objective + space + backend -> report + profile.

Orchestration: above :mod:`commtune.evaluators` (the objective, made by name) and
:mod:`commtune.search` (space, storage, engines), below the API and the CLI
(``commtune search``). Layers: ``tests/test_architecture.py``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import json
import os
from pathlib import Path
from typing import Any

from commtune.errors import CommtuneError
from commtune.evaluators.base import make_evaluator
from commtune.knobs import BASELINES, KNOBS, SHARDED_BASELINES, Knobs
from commtune.profiles import Profile, model_summary, provenance, save_profile
from commtune.search import SearchConfig, SearchResult, run_backend
from commtune.search.storage import normalise, open_storage, portable

DEFAULT_STUDIES_DB = "commtune-studies.db"


def study_name_for(scenario, space, objective_name: str, sampler: str = "auto", seed: int | None = 0) -> str:
    """Stable name from model + cluster + space + workload + sampler + seed: re-running the same
    command resumes its study; another sampler or seed gets a study of its own."""
    key = json.dumps({
        "model": scenario.model.fingerprint(), "cluster": scenario.cluster.to_dict(),
        "batch": scenario.batch_size, "precision": scenario.precision, "space": space.fingerprint(),
        "objective": objective_name, "sampler": sampler, "seed": seed,
        **({"activation_checkpointing": True} if scenario.activation_checkpointing else {}),  # new key only when on
    }, sort_keys=True, default=str)
    h = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{scenario.model.name}-{scenario.cluster.name}-{space.name}-{sampler}-seed{seed}-{h}"


def check_resume(config: SearchConfig) -> int:
    """Complete trials an existing study already holds (0 for a new one). A study made
    by another sampler (or over another space) is refused: its trials are not this
    run's, and resuming would report them under this sampler's name."""
    if config.sampler == "grid" or not config.storage or normalise(config.storage) == "memory":
        return 0
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(config.storage)
    try:
        study = optuna.load_study(study_name=config.study_name, storage=storage)
    except KeyError:
        return 0
    attrs = study.user_attrs
    made_by = attrs.get("sampler")
    fix = (f"re-run with --sampler {made_by} to resume it, or give another --study (or --storage) "
           f"for a separate study")
    if made_by is not None and made_by != config.sampler:
        raise CommtuneError(f"study {config.study_name!r} was made by sampler {made_by!r}, not "
                            f"{config.sampler!r}: {fix}")
    fp = attrs.get("space_fingerprint")
    if fp is not None and fp != config.space.fingerprint():
        raise CommtuneError(f"study {config.study_name!r} was made over another search space than "
                            f"{config.space.name!r}: give another --study (or --storage)")
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def default_storage(workdir: str | os.PathLike) -> str:
    return f"sqlite:///{(Path(workdir) / DEFAULT_STUDIES_DB).resolve()}"


DEFAULT_CONFIRM = 3


def search_scenario(scenario, space, *, backend: str = "optuna", objective_name: str = "simulator",
                    objective_options: dict[str, Any] | None = None, confirm: int = 0,
                    **config_fields: Any) -> tuple[SearchResult, dict[str, Any]]:
    """Run the search; returns the backend result and the report (JSON-able).

    ``objective_name``: a registered evaluator (:mod:`commtune.evaluators`),
    built with ``objective_options``. An evaluator with a ``screening``
    simulator (the live one) gets a report whose ``predicted`` is the
    simulator's prediction for the same workload and ``measured`` the
    evaluator's result. ``confirm=K`` (multi-fidelity): the search runs on
    the evaluator's screening simulator, then its top K distinct
    configurations are measured by the evaluator and the measured best is
    the result.
    """
    evaluator = make_evaluator(objective_name, scenario, **(objective_options or {}))
    if confirm and evaluator.screening is None:
        raise CommtuneError(f"--confirm K needs an evaluator that measures (e.g. live); {objective_name!r} has no "
                            f"screening simulator to search first")
    measuring = evaluator.screening is not None
    if measuring:
        evaluator.check_space(space, "--confirm (live confirmation)" if confirm else None)
    searched = evaluator.screening if confirm else evaluator
    key = evaluator.study_key()
    if confirm:
        key = "multi" + key[len(evaluator.name):]
    kind = "multi" if confirm else objective_name
    if not config_fields.get("study_name"):
        config_fields["study_name"] = study_name_for(scenario, space, key, config_fields.get("sampler", "auto"),
                                                     config_fields.get("seed", 0))
    config = SearchConfig(space=space, objective=searched, **config_fields)
    config.study_attrs = {"model": scenario.model.name, "cluster": scenario.cluster.describe(),
                          "space": space.name, "objective": kind, "sampler": config.sampler, "seed": config.seed}
    try:
        check_resume(config)
    except BaseException:
        if measuring:
            evaluator.close()
        raise
    if not measuring:
        result = run_backend(backend, config)
        return result, make_report(scenario, space, evaluator, result, config)
    try:  # the measuring ranks run from the first trial to the report's measurements
        result = run_backend(backend, config)
        if not confirm:
            return result, _measured_report(scenario, space, evaluator, result, config)
        return result, _confirm_report(scenario, space, evaluator, result, config, confirm)
    finally:
        evaluator.close()


def _measured_section(evaluator, metrics: dict) -> dict[str, Any]:
    """The live measurement of the best: its times, the measured baselines (DDP's defaults, and
    FSDP2's when the best is sharded: ``num_units`` in its metrics) and the live settings."""
    from commtune.knobs import DDP_DEFAULT, FSDP2_DEFAULT

    step = float(metrics["step_time_s"])
    named = {"ddp_default": DDP_DEFAULT, **({"fsdp2_default": FSDP2_DEFAULT} if "num_units" in metrics else {})}
    baselines = {}
    for name, knobs in named.items():
        t = evaluator.evaluate(knobs)["step_time_s"]
        baselines[name] = {"step_time_s": t, "speedup": t / step}
    sharded = {"num_units": metrics["num_units"]} if "num_units" in metrics else {}
    return {
        "step_time_s": step, "step_times_s": list(metrics["step_times_s"]), **sharded,
        "baselines": baselines,
        "model": evaluator.profile.name, "live": evaluator.settings.describe(),
        "launches": evaluator.launches, "timed_steps": evaluator.steps_run, **_overhead(evaluator),
    }


def _overhead(evaluator) -> dict[str, Any]:
    """Per-trial overhead of the measured trials (wall time minus the ranks' warm-up and timed steps)."""
    import statistics

    rows = getattr(evaluator, "trial_log", None)
    if not rows:
        return {}
    over = [r["overhead_s"] for r in rows]
    return {"measured_trials": len(rows), "trial_overhead_median_s": statistics.median(over),
            "trial_overhead_max_s": max(over), "group_startup_s": evaluator.startup_s,
            "trial_timing": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}


def _measured_report(scenario, space, evaluator, result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    measured = dict(result.best_metrics)
    sim = evaluator.screening
    report = make_report(scenario, space, sim, dataclasses.replace(result, best_metrics=sim.evaluate(result.best_knobs)),
                         config)
    report["objective"] = evaluator.name
    report["measured"] = _measured_section(evaluator, measured)
    report["measured_step_time_s"] = measured["step_time_s"]
    return report


def _confirm_report(scenario, space, evaluator, result: SearchResult, config: SearchConfig, k: int) -> dict[str, Any]:
    sim = evaluator.screening
    if result.backend == "grid":
        candidates = _grid_top(space, sim, evaluator, config, k)
    else:
        from commtune.search.optuna_backend import open_study

        candidates = top_distinct(open_study(config)[0], space, evaluator, k)
    rows = confirm_live(evaluator, candidates)
    best = Knobs.from_dict(rows[0]["knobs"])
    chosen = dataclasses.replace(result, best_knobs=best, best_metrics=sim.evaluate(best))
    report = make_report(scenario, space, sim, chosen, config)
    report["objective"] = "multi"
    report["simulator_best"] = result.best_knobs.to_dict()
    m = evaluator.evaluate(chosen.best_knobs)
    report["measured"] = {**_measured_section(evaluator, m), "confirmed": rows}
    report["measured_step_time_s"] = m["step_time_s"]
    report["confirmed"] = rows
    return report


def _grid_top(space, sim, evaluator, config: SearchConfig, k: int):
    import numpy as np

    rows = space.grid_rows(points=config.grid_points)
    steps = np.asarray(sim.evaluate_batch(space.knob_arrays(rows))["step_time_s"])
    out, seen = [], set()
    for i in np.argsort(steps, kind="stable"):
        knobs = space.knobs_from_params(rows[int(i)])
        key = evaluator.key(knobs)
        if key not in seen:
            seen.add(key)
            out.append((knobs, float(steps[int(i)])))
        if len(out) >= k:
            break
    return out


def extrapolation_report(objective, knobs) -> dict[str, list[dict]]:
    """What the simulator's prediction for ``knobs`` asks beyond its calibration
    (:meth:`simulators.network.NetworkModel.extrapolation`): ``flags`` (all) and
    ``warnings`` (the unmodelled ones). Empty for objectives without a simulator."""
    sim = getattr(objective, "simulator", None)
    flags = sim.network.extrapolation(knobs) if sim is not None else []
    return {"flags": flags, "warnings": [f for f in flags if not f["modelled"]]}


def top_distinct(study, space, evaluator, k: int) -> list[tuple[Knobs, float]]:
    """The best ``k`` complete trials of a study whose keys (for ``evaluator``) differ."""
    from optuna.trial import TrialState

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: (t.value, t.number))
    out: list[tuple[Knobs, float]] = []
    seen: set[Knobs] = set()
    for t in done:
        knobs = space.knobs_from_params(t.params)
        key = evaluator.key(knobs)
        if key in seen:
            continue
        seen.add(key)
        out.append((knobs, float(t.value)))
        if len(out) >= k:
            break
    return out


def confirm_live(live, candidates: list[tuple[Knobs, float]]) -> list[dict]:
    """Measure the candidates live (one launch); rows sorted by measured step time."""
    measured = live.evaluate_many([k for k, _ in candidates])
    rows = []
    for rank, ((knobs, pred), m) in enumerate(zip(candidates, measured), start=1):
        rows.append({"sim_rank": rank, "knobs": knobs.to_dict(), "active": knobs.active(),
                     "predicted_step_time_s": pred, "measured_step_time_s": m["step_time_s"],
                     "step_times_s": m["step_times_s"]})
    rows.sort(key=lambda r: (r["measured_step_time_s"], r["sim_rank"]))
    return rows


def make_report(scenario, space, objective, result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    best = result.best_metrics
    step = float(best["step_time_s"])
    if result.best_knobs.sharding != "none":  # the same step with prefetch no deeper than the units allow
        from commtune.sharding_checks import cap_prefetch

        result = dataclasses.replace(result, best_knobs=cap_prefetch(result.best_knobs, scenario.model))
    sharded = space.sharding_values() != {"none"}  # the space takes a sharded configuration
    # each framework's defaults, simulated (also for live searches: the measured ones are in "measured");
    # one that does not fit the GPU's memory has no step time (None)
    baselines = {}
    frameworks = {"ddp_default": BASELINES["ddp_default"], **SHARDED_BASELINES} if sharded else BASELINES
    for name, knobs in frameworks.items():
        t = float(objective.evaluate(knobs)["step_time_s"])
        baselines[name] = {"step_time_s": t, "speedup": t / step} if math.isfinite(t) else \
            {"step_time_s": None, "speedup": None}
    lb = None if sharded else objective.lower_bound_s()  # the bound covers all-reduce DP only
    report: dict[str, Any] = {
        "model": scenario.model.name,
        "cluster": scenario.cluster.name,
        "bw_Bps": scenario.cluster.inter_bw_Bps,
        "scenario": scenario.describe(),
        "space": space.name,
        "best": result.best_knobs.to_dict(),
        "best_active": result.best_knobs.active(),
        "predicted_step_time_s": step,
        "scaling_efficiency": float(best.get("scaling_efficiency", float("nan"))),
        "samples_per_s": float(best.get("samples_per_s", float("nan"))),
        "predicted": {k: float(v) for k, v in best.items()},
        "baselines": {k: v["step_time_s"] for k, v in baselines.items()},
        "speedup": {k: v["speedup"] for k, v in baselines.items()},
        "lower_bound_s": lb,
        "gap_to_lower_bound": (step / lb - 1.0) if lb else None,
        "trials": result.trials,
        "new_trials": result.new_trials,
        "backend": result.backend,
        "sampler": result.sampler,
        "seed": config.seed,
        "study": result.study_name,
        "storage": result.storage,
        "objective": objective.name,
        "extrapolation": extrapolation_report(objective, result.best_knobs),
        **result.extra,
    }
    if "peak_memory_bytes" in best:
        report["peak_memory_bytes"] = int(best["peak_memory_bytes"])
        report["device_memory_bytes"] = int(getattr(objective, "memory_limit_bytes", 0)) or None
        report["infeasible_evaluations"] = int(getattr(objective, "infeasible", 0))
    return report


def profile_from_report(scenario, report: dict[str, Any]) -> Profile:
    """The profile of a search report (what ``commtune search`` writes)."""
    return Profile(
        model=model_summary(scenario), cluster=scenario.cluster, knobs=Knobs.from_dict(report["best"]),
        predicted=report["predicted"],
        baselines={k: {"step_time_s": v, "speedup": report["speedup"][k]} for k, v in report["baselines"].items()},
        lower_bound_s=report["lower_bound_s"],
        provenance=provenance(
            backend=report["backend"], sampler=report["sampler"], trials=report["trials"],
            new_trials=report["new_trials"], seed=report["seed"],
            study=report["study"], storage=portable(report["storage"]), objective=report["objective"], space=report["space"],
        ),
        measured=report.get("measured") or {},
    )


def write_profile(scenario, report: dict[str, Any], path: str | os.PathLike) -> Path:
    return save_profile(profile_from_report(scenario, report), path)


def knob_cell(name: str, value: Any) -> str:
    return KNOBS[name].show(value)
