"""One search for one scenario: objective + space + backend -> report + profile."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from commtune.knobs import BASELINES, KNOBS
from commtune.profiles import Profile, model_summary, provenance, save_profile
from commtune.search import SearchConfig, SearchResult, run_backend
from commtune.search.objective import make_objective
from commtune.search.storage import portable

DEFAULT_STUDIES_DB = "commtune-studies.db"


def study_name_for(scenario, space, objective_name: str) -> str:
    """Stable name from model + cluster + space + workload (re-running resumes)."""
    key = json.dumps({
        "model": scenario.model.fingerprint(), "cluster": scenario.cluster.to_dict(),
        "batch": scenario.batch_size, "precision": scenario.precision, "space": space.fingerprint(),
        "objective": objective_name,
    }, sort_keys=True, default=str)
    h = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{scenario.model.name}-{scenario.cluster.name}-{space.name}-{h}"


def default_storage(workdir: str | os.PathLike) -> str:
    return f"sqlite:///{(Path(workdir) / DEFAULT_STUDIES_DB).resolve()}"


DEFAULT_CONFIRM = 3


def _live_key(objective_name: str, live) -> str:
    """The objective part of the study name: live settings change what is measured."""
    d = {k: v for k, v in live.settings.describe().items() if k != "launch"}
    d["launch"] = live.settings.launch.describe()
    return f"{objective_name}:{json.dumps(d, sort_keys=True, default=str)}"


def search_scenario(scenario, space, *, backend: str = "optuna", objective_name: str = "simulator",
                    objective_options: dict[str, Any] | None = None, confirm: int = 0,
                    **config_fields: Any) -> tuple[SearchResult, dict[str, Any]]:
    """Run the search; returns the backend result and the report (JSON-able).

    ``objective_name="live"``: trials are measured (``objective_options``:
    ``settings=LiveSettings``); the report's ``predicted`` is the simulator's
    prediction for the same synthetic model and ``measured`` the live result.
    ``confirm=K`` (multi-fidelity, with ``objective_options`` giving the live
    settings): the search runs on the simulator of the live synthetic model,
    then its top K distinct configurations are measured live and the measured
    best is the result.
    """
    live = None
    if objective_name == "live" or confirm:
        from commtune.search.live import LiveObjective, check_live_space

        check_live_space(space, "--objective live" if objective_name == "live" else "--confirm (live confirmation)")
        live = LiveObjective(scenario, **(objective_options or {}))
        objective = live if objective_name == "live" else live.screening_objective
        key = _live_key("live" if objective_name == "live" else "multi", live)
    else:
        objective = make_objective(objective_name, scenario, **(objective_options or {}))
        key = objective_name
    if not config_fields.get("study_name"):
        config_fields["study_name"] = study_name_for(scenario, space, key)
    config = SearchConfig(space=space, objective=objective, **config_fields)
    config.study_attrs = {"model": scenario.model.name, "cluster": scenario.cluster.describe(),
                          "space": space.name, "objective": "live" if objective_name == "live" else
                          ("multi" if confirm else objective_name)}
    result = run_backend(backend, config)
    if live is None:
        return result, make_report(scenario, space, objective, result, config)
    if objective_name == "live":
        return result, _live_report(scenario, space, live, result, config)
    return result, _confirm_report(scenario, space, live, result, config, confirm)


def _measured_section(live, knobs, metrics: dict) -> dict[str, Any]:
    from commtune.knobs import DDP_DEFAULT

    base = live.evaluate(DDP_DEFAULT)
    return {
        "step_time_s": float(metrics["step_time_s"]), "step_times_s": list(metrics["step_times_s"]),
        "baselines": {"ddp_default": {"step_time_s": base["step_time_s"],
                                      "speedup": base["step_time_s"] / float(metrics["step_time_s"])}},
        "model": live.profile.name, "live": live.settings.describe(),
        "launches": live.launches, "timed_steps": live.steps_run,
    }


def _with_sim_metrics(result: SearchResult, sim) -> SearchResult:
    import dataclasses

    return dataclasses.replace(result, best_metrics=sim.evaluate(result.best_knobs))


def _live_report(scenario, space, live, result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    measured = dict(result.best_metrics)
    report = make_report(scenario, space, live.screening_objective, _with_sim_metrics(result, live.screening_objective), config)
    report["objective"] = "live"
    report["measured"] = _measured_section(live, result.best_knobs, measured)
    report["measured_step_time_s"] = measured["step_time_s"]
    return report


def _confirm_report(scenario, space, live, result: SearchResult, config: SearchConfig, k: int) -> dict[str, Any]:
    from commtune.knobs import Knobs
    from commtune.search.live import confirm_live, top_distinct

    sim = live.screening_objective
    if result.backend == "grid":
        candidates = _grid_top(space, sim, config, k)
    else:
        from commtune.search.optuna_backend import open_study

        candidates = top_distinct(open_study(config)[0], space, k)
    rows = confirm_live(live, candidates)
    best_row = rows[0]
    import dataclasses

    chosen = dataclasses.replace(result, best_knobs=Knobs.from_dict(best_row["knobs"]),
                                 best_metrics=sim.evaluate(Knobs.from_dict(best_row["knobs"])))
    report = make_report(scenario, space, sim, chosen, config)
    report["objective"] = "multi"
    report["simulator_best"] = result.best_knobs.to_dict()
    m = live.evaluate(chosen.best_knobs)
    report["measured"] = {**_measured_section(live, chosen.best_knobs, m), "confirmed": rows}
    report["measured_step_time_s"] = m["step_time_s"]
    report["confirmed"] = rows
    return report


def _grid_top(space, sim, config: SearchConfig, k: int):
    import numpy as np

    from commtune.search.grid_backend import grid_space
    from commtune.search.live import LiveObjective

    g = grid_space(space, config.grid_points)
    rows = g.grid_rows()
    steps = np.asarray(sim.evaluate_batch(g.knob_arrays(rows))["step_time_s"])
    out, seen = [], set()
    for i in np.argsort(steps, kind="stable"):
        knobs = g.knobs_from_params(rows[int(i)])
        key = LiveObjective.key(knobs)
        if key not in seen:
            seen.add(key)
            out.append((knobs, float(steps[int(i)])))
        if len(out) >= k:
            break
    return out


def make_report(scenario, space, objective, result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    best = result.best_metrics
    step = float(best["step_time_s"])
    baselines = {}
    for name, knobs in BASELINES.items():  # simulated (also for live searches: the measured ones are in "measured")
        t = float(objective.evaluate(knobs)["step_time_s"])
        baselines[name] = {"step_time_s": t, "speedup": t / step}
    lb = objective.lower_bound_s()
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
        **result.extra,
    }
    return report


def write_profile(scenario, report: dict[str, Any], path: str | os.PathLike) -> Path:
    from commtune.knobs import Knobs

    profile = Profile(
        model=model_summary(scenario), cluster=scenario.cluster, knobs=Knobs.from_dict(report["best"]),
        predicted=report["predicted"],
        baselines={k: {"step_time_s": v, "speedup": report["speedup"][k]} for k, v in report["baselines"].items()},
        lower_bound_s=report["lower_bound_s"],
        provenance=provenance(
            backend=report["backend"], sampler=report["sampler"], trials=report["trials"], seed=report["seed"],
            study=report["study"], storage=portable(report["storage"]), objective=report["objective"], space=report["space"],
        ),
        measured=report.get("measured") or {},
    )
    return save_profile(profile, path)


def knob_cell(name: str, value: Any) -> str:
    return KNOBS[name].show(value)
