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


def search_scenario(scenario, space, *, backend: str = "optuna", objective_name: str = "simulator",
                    **config_fields: Any) -> tuple[SearchResult, dict[str, Any]]:
    """Run the search; returns the backend result and the report (JSON-able)."""
    objective = make_objective(objective_name, scenario)
    if not config_fields.get("study_name"):
        config_fields["study_name"] = study_name_for(scenario, space, objective_name)
    config = SearchConfig(space=space, objective=objective, **config_fields)
    config.study_attrs = {"model": scenario.model.name, "cluster": scenario.cluster.describe(),
                          "space": space.name, "objective": objective_name}
    result = run_backend(backend, config)
    report = make_report(scenario, space, objective, result, config)
    return result, report


def make_report(scenario, space, objective, result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    best = result.best_metrics
    step = float(best["step_time_s"])
    baselines = {}
    for name, knobs in BASELINES.items():
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
            study=report["study"], storage=report["storage"], objective=report["objective"], space=report["space"],
        ),
    )
    return save_profile(profile, path)


def knob_cell(name: str, value: Any) -> str:
    return KNOBS[name].show(value)
