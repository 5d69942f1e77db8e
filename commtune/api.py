"""The Python front door: what the CLI does, as functions.

>>> import commtune
>>> m = commtune.simulate(model="resnet50", bw="32gbit", fusion_threshold_bytes="64MiB")  # doctest: +SKIP
>>> run = commtune.search(model="resnet50", bw="32gbit", trials=50)                     # doctest: +SKIP
>>> run.best, run.predicted["step_time_s"], run.baselines                                 # doctest: +SKIP
>>> run.save("resnet50-32gbit.json")                                                       # doctest: +SKIP
>>> prof = commtune.load_profile("resnet50-32gbit.json"); prof.knobs                      # doctest: +SKIP
>>> ddp = commtune.wrap(model, prof)          # inside an initialised torch.distributed job  # doctest: +SKIP

Defaults are the CLI's (``commtune simulate`` / ``search``), and so are the
errors: bad input raises one :class:`~commtune.errors.CommtuneError` with a
one-line message. One difference: :func:`search` keeps its study in memory
unless ``storage`` is given (the CLI uses ``<workdir>/commtune-studies.db``).
Heavy dependencies (torch, optuna, Ray) are imported on use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from commtune.errors import CommtuneError, did_you_mean

DEFAULT_MODEL = "resnet50"
DEFAULT_BW = "32gbit"  # commtune search's default
DEFAULT_TRIALS = 50
_SCENARIO_KEYS = ("cluster", "nodes", "gpus_per_node", "per_stream", "latency", "intra", "device",
                  "batch_size", "precision", "input_size")


def make_scenario(model: Any = DEFAULT_MODEL, bw: str | None = None, *, cluster: str | None = None,
             nodes: int | None = None, gpus_per_node: int | None = None, per_stream: str | None = None,
             latency: str | None = None, intra: str | None = None, device: str | None = None,
             batch_size: int = 64, precision: str = "amp", input_size: int | None = None):
    """The :class:`~commtune.scenario.Scenario` the CLI's scenario flags describe
    (``model``: a zoo name, a model profile file or a ModelProfile)."""
    from commtune.cluster import make_cluster
    from commtune.devices import PRECISIONS
    from commtune.models import load_model
    from commtune.models.base import ModelProfile
    from commtune.scenario import Scenario

    for name, v in (("batch_size", batch_size), ("nodes", nodes), ("gpus_per_node", gpus_per_node),
                    ("input_size", input_size)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise CommtuneError(f"{name} must be a positive integer, got {v!r}")
    if precision not in PRECISIONS:
        raise CommtuneError(f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}")
    m = model if isinstance(model, ModelProfile) else load_model(str(model), input_size=input_size)
    c = make_cluster(cluster=cluster, bw=bw, nodes=nodes, gpus_per_node=gpus_per_node, per_stream=per_stream,
                     latency=latency, intra=intra, device=device)
    return Scenario(m, c, batch_size=batch_size, precision=precision)


def make_knobs(base=None, **values: Any):
    """:class:`~commtune.knobs.Knobs` from keyword values (strings parsed like the CLI's
    flags, e.g. ``fusion_threshold_bytes="64MiB"``); unset knobs keep ``base``
    (default: Horovod's defaults, as ``commtune simulate``)."""
    from commtune.knobs import KNOBS, Knobs

    parsed = {}
    for name, v in values.items():
        if name not in KNOBS:
            raise CommtuneError(f"unknown knob or option {name!r}{did_you_mean(name, [*KNOBS, *_SCENARIO_KEYS])}; "
                                f"knobs: {', '.join(KNOBS)}")
        parsed[name] = KNOBS[name].parse(v) if isinstance(v, str) else v
    return Knobs.from_dict(parsed, base=base)


def _split(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {k: v for k, v in kw.items() if k in _SCENARIO_KEYS}, {k: v for k, v in kw.items() if k not in _SCENARIO_KEYS}


def simulate(model: Any = DEFAULT_MODEL, bw: str | None = None, **options: Any) -> dict[str, float]:
    """One simulated step (``commtune simulate --json``'s metrics): ``options`` are
    scenario options (``nodes=``, ``cluster=``, ``batch_size=``, ...) and knobs
    (``fusion_threshold_bytes="64MiB"``, ``num_streams=4``, ...)."""
    sc_kw, knob_kw = _split(options)
    sc = make_scenario(model, bw, **sc_kw)
    return {k: float(v) for k, v in sc.simulator.run(make_knobs(**knob_kw)).to_dict().items()}


@dataclass
class SearchRun:
    """What :func:`search` found: ``best`` knobs, ``predicted`` metrics, simulated
    ``baselines`` (step time per baseline), the ``profile`` to save, the objective
    value of every complete trial in order (``history``), the full ``report``."""

    best: Any  # Knobs
    predicted: dict[str, float]
    baselines: dict[str, float]
    profile: Any  # Profile
    history: list[float] = field(repr=False, default_factory=list)
    report: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def speedup(self) -> dict[str, float]:
        return dict(self.report["speedup"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile (JSON or YAML by suffix) atomically; returns the path."""
        from commtune.profiles import save_profile

        return save_profile(self.profile, path)


def search(model: Any = DEFAULT_MODEL, bw: str | None = DEFAULT_BW, *, trials: int = DEFAULT_TRIALS,
           space: str = "default", sampler: str = "auto", backend: str = "optuna", seed: int | None = 0,
           storage: str | None = None, study: str | None = None, timeout_s: float | None = None,
           screen: int = 4096, objective: str = "simulator", objective_options: dict[str, Any] | None = None,
           **scenario_options: Any) -> SearchRun:
    """Tune the knobs of a scenario (``commtune search``'s defaults; the study is in
    memory unless ``storage`` is a URL or path)."""
    from commtune.search import SAMPLERS, backend_names
    from commtune.search.space import load_space
    from commtune.tuning import profile_from_report, search_scenario

    unknown = [k for k in scenario_options if k not in _SCENARIO_KEYS]
    if unknown:
        raise CommtuneError(f"unknown option {unknown[0]!r}{did_you_mean(unknown[0], list(_SCENARIO_KEYS))}")
    from commtune.limits import RANGES

    RANGES["trials"].check(trials, "trials")
    RANGES["screen"].check(screen, "screen")
    if seed is not None:
        RANGES["seed"].check(seed, "seed")
    if sampler not in SAMPLERS:
        raise CommtuneError(f"unknown sampler {sampler!r}{did_you_mean(sampler, SAMPLERS)}; samplers: {', '.join(SAMPLERS)}")
    if backend not in backend_names():
        names = backend_names()
        raise CommtuneError(f"unknown backend {backend!r}{did_you_mean(backend, names)}; backends: {', '.join(names)}")
    sc = make_scenario(model, bw, **scenario_options)
    sp = load_space(space)
    result, report = search_scenario(sc, sp, backend=backend, objective_name=objective,
                                objective_options=objective_options, sampler=sampler, trials=trials,
                                timeout_s=timeout_s, seed=seed, storage=storage, study_name=study, screen=screen)
    profile = profile_from_report(sc, report)
    return SearchRun(best=profile.knobs, predicted=dict(report["predicted"]), baselines=dict(report["baselines"]),
                     profile=profile, history=list(result.history), report=report)


def load_profile(path: str | os.PathLike):
    """Read and validate a profile file (:class:`~commtune.profiles.Profile`, with ``.knobs``)."""
    from commtune.profiles import load_profile as _load

    return _load(path)


def wrap(model: Any, profile: Any, process_group: Any | None = None, **options: Any):
    """``DistributedDataParallel(model)`` with a profile (object or path) applied
    (:func:`commtune.runtime.wrap`; needs torch and an initialised process group)."""
    from commtune.extras import require

    require("torch", "commtune.wrap")
    from commtune.runtime.apply import wrap as _wrap

    return _wrap(model, profile, process_group, **options)


def _launch(ranks: Any, timeout_s: float, engine: str = "gloo"):
    """A LaunchSpec: ``ranks`` local processes, or a LaunchSpec as given (e.g. an emulated cluster's)."""
    from commtune.probe.launch import LaunchSpec

    if isinstance(ranks, LaunchSpec):
        return ranks
    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 2:
        raise CommtuneError(f"ranks must be at least 2 (or a LaunchSpec), got {ranks!r}")
    return LaunchSpec(ranks=ranks, timeout_s=timeout_s, engine=engine)


def probe(ranks: Any = 2, *, sizes: str | None = None, streams: str | Sequence[int] | None = None, iters: int = 5,
          warmup: int = 1, engine: str = "gloo", timeout_s: float = 300.0, output: str | os.PathLike | None = None,
          burst_sizes: str = "1MB,4MB", host_sizes: str = "1MB,4MB,16MB,64MB", fit_min_size: str | int = "1MiB",
          name: str = "calibrated", ddp_calibration: bool = True, ddp_steps: int = 6):
    """``commtune probe``: time all-reduce on ``ranks`` local processes (or a
    :class:`~commtune.probe.launch.LaunchSpec`, e.g. an emulated cluster's) and fit a
    calibration; returns ``(ClusterSpec, details)`` (the calibration file's sections plus the
    raw ``records``) and writes the calibration file ``output`` if given. The CLI's defaults:
    sizes 4 KiB + 1-64 MiB, streams 1,2,3,4,6,8, fit >= 1 MiB, and the DDP calibration run
    (``ddp_calibration=False`` skips it)."""
    from commtune.probe.probe import (DEFAULT_SIZES, DEFAULT_STREAMS, calibration, parse_sizes, parse_streams,
                                      run_probe, write_calibration)
    from commtune.limits import RANGES
    from commtune.units import parse_size

    RANGES["steps"].check(ddp_steps, "ddp_steps")  # before minutes of probing, not after
    launch = _launch(ranks, timeout_s, engine)
    none = ("", "none", "off", "0")
    result = run_probe(launch, parse_sizes(DEFAULT_SIZES if sizes is None else sizes),
                       parse_streams(DEFAULT_STREAMS if streams is None else streams), iters, warmup,
                       burst_sizes=[] if burst_sizes.strip().lower() in none else parse_sizes(burst_sizes),
                       host_sizes=[] if host_sizes.strip().lower() in none else parse_sizes(host_sizes))
    spec, extra = calibration(result, hosts=launch.hosts, source=launch.describe(), name=name,
                              min_fit_size=parse_size(fit_min_size, "fit_min_size"))
    if ddp_calibration:
        from commtune.probe.ddp_calib import calibrate_ddp

        spec = calibrate_ddp(launch, spec, extra, steps=ddp_steps)
    if output is not None:
        write_calibration(str(output), spec, extra)
    return spec, {**extra, "records": result["records"], "world_size": result["world_size"]}


def validate(calibration: Any, ranks: Any = 2, *, model: Any = DEFAULT_MODEL, configs: Sequence[Any] | None = None,
             scale: float = 0.25, forward_s: float = 0.1, backward_s: float = 0.2, steps: int = 5, warmup: int = 2,
             passes: int = 1, repeat_noisy: int = 0, timeout_s: float = 300.0, drift_check: bool = True) -> dict:
    """``commtune validate``: measure DDP configurations live on ``ranks`` local ranks (or a
    LaunchSpec) and compare with the simulator of ``calibration`` (a ClusterSpec or calibration file);
    returns ``{"rows", "summary" (MAPE, Spearman, pick gap), ...}``. With a calibration *file* and
    ``drift_check``, also ``"drift"``: its DDP anchor points re-timed (``commtune.probe.drift``)."""
    from commtune.validation import grid_configs, run_validation

    drift_from = calibration if drift_check and isinstance(calibration, (str, os.PathLike)) else None
    return run_validation(_launch(ranks, timeout_s), calibration, list(configs) if configs is not None else grid_configs(), model,
                          scale=scale, forward_s=forward_s, backward_s=backward_s, steps=steps, warmup=warmup,
                          passes=passes, repeat_noisy=repeat_noisy, drift_from=drift_from)
