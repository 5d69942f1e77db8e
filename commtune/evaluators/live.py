"""The live evaluator: measured PyTorch DDP and FSDP2 step times.

:class:`LiveEvaluator` (registered as ``live``; ``--objective live``) times
real DDP steps (``sharding: none``) or FSDP2 steps (``sharding`` grad / full /
hybrid, applied by :mod:`commtune.runtime.shard`) of the synthetic model that mirrors a model profile
(:mod:`commtune.runtime.synthetic`, timed by :mod:`commtune.probe.ddp_step`: one module per layer, tensors scaled by
``scale``, compute emulated by sleeping to the per-layer timeline or real
CPU work) on the ranks of a :class:`~commtune.probe.launch.LaunchSpec`:

* ``--ranks N``: N local processes on 127.0.0.1 (gloo over loopback);
* ``--cluster emulated``: one rank per host of the emulated cluster that is up
  (``commtune cluster up``); the simulator side of the scenario is built
  from the cluster's state (:func:`cluster_from_state`);
* under torchrun on real machines (``launch`` a
  :class:`~commtune.runtime.worker_group.JobLaunch`): the job's own ranks,
  rank 0 searches, every rank measures.

Only knobs DDP or FSDP2 can apply are measured (:mod:`commtune.runtime.ddp_plan`);
a space that varies anything else is refused (:meth:`LiveEvaluator.check_space`).

The ranks start once per evaluator: a persistent worker group
(:mod:`commtune.runtime.worker_group`) in which each trial reconfigures DDP in
place, or shards a fresh copy of the model with FSDP2 when the sharded knobs
change (same ranks, same warm-up / steps / median policy; prefetch beyond the
model's units is capped to them, as FSDP2's prefetch lists are); :meth:`LiveEvaluator.close` stops them. With ``--backend ray`` the
search places the group on the Ray cluster (:meth:`LiveEvaluator.place_on_ray`,
:mod:`commtune.runtime.ray_group`): Ray actors, one per rank, that every Ray
Tune trial reuses. ``evaluate_many(list)`` times
several configurations (with ``passes`` > 1 the list is timed that many times,
alternating its order, and the step times are pooled). Results are cached per
live key (:func:`~commtune.runtime.ddp_plan.live_key`). For pruning rank 0 reports every timed step and the search answers
go/stop (read one step later, see :class:`~commtune.runtime.worker_loop.Pruning`),
so a pruned trial stops right after the step that condemned it
(:meth:`LiveEvaluator.evaluate_steps`).

With ``model_factory`` (``pkg.mod:make_model``) the ranks measure the user's
own model (synthetic inputs as ``commtune profile-model``) instead of the
synthetic mirror; ``model`` is then its recorded profile.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Sequence

from commtune.errors import CommtuneError
from commtune.evaluators.base import Evaluator, register_evaluator
from commtune.evaluators.simulator import SimulatorEvaluator
from commtune.host_load import mean_busy_cores
from commtune.knobs import Knobs
from commtune.runtime import ddp_plan


def cluster_from_state(state, device: str | None = None):
    """The simulator's ClusterSpec of a running emulated cluster: one GPU per host,
    the shaped link rate, the per-stream cap and the one-way latency."""
    from commtune.cluster import ClusterSpec

    kw: dict[str, Any] = {}
    if device:
        kw["device"] = device
    return ClusterSpec(
        nodes=state.num_hosts, gpus_per_node=1, inter_bw_Bps=float(state.link_rate_Bps),
        per_stream_Bps=float(state.per_stream_Bps) if state.per_stream_Bps else math.inf,
        inter_latency_s=float(state.latency_s), name=f"emulated-{state.prefix}", **kw,
    )


#: pass medians of one configuration further apart than this (relative) are re-measured (``repeat_noisy``)
NOISY_PASSES = 0.02


def pass_disagreement(runs: Sequence[dict]) -> float:
    """:func:`commtune.stats.relative_spread` of the per-pass median step times of one configuration."""
    from commtune.stats import relative_spread

    return relative_spread([statistics.median(r["step_times_s"]) for r in runs])


@dataclasses.dataclass(frozen=True)
class LiveSettings:
    """How live trials run (the synthetic model and the launch)."""

    launch: Any  # commtune.probe.launch.LaunchSpec
    scale: float = 0.25
    compute: str = "emulated"
    forward_s: float | None = None  # None: the scenario's forward time (0.1 s without a scenario)
    backward_s: float | None = None  # None: the scenario's backward time (0.2 s without a scenario)
    steps: int = 8
    warmup: int = 1
    mode: str | None = None  # None: each configuration's stream_mode; else it overrides them
    share: str = "flops"
    passes: int = 1
    repeat_noisy: int = 0  # extra passes, at most, over configurations whose pass medians disagree
    model_factory: str | None = None  # "pkg.mod:make_model": the user's model instead of the synthetic mirror
    record_options: dict | None = None  # its synthetic inputs: batch_size, input_shape, seq_len, vocab

    def describe(self) -> dict[str, Any]:
        d = {"launch": self.launch.describe(), "scale": self.scale, "compute": self.compute,
             "forward_s": self.forward_s, "backward_s": self.backward_s, "steps": self.steps,
             "warmup": self.warmup, "mode": self.mode}
        if self.share != "flops":
            d["share"] = self.share
        if self.passes != 1:
            d["passes"] = self.passes
        if self.repeat_noisy:
            d["repeat_noisy"] = self.repeat_noisy
        if self.model_factory:
            d.update(model_factory=self.model_factory, record_options=self.record_options)
        return d


class LiveEvaluator(Evaluator):
    """Measured DDP or FSDP2 step time of a synthetic model or the user's (median over timed steps).

    ``model``: a zoo name or ModelProfile (mirrored with the settings' scale and
    forward/backward times; a batch-1 profile with measured times and scale 1
    is used as it is). ``scenario``: when given, its cluster must have the
    launch's world size, it supplies the default forward/backward times, and
    a simulator of the same synthetic model on it is the ``screening``
    evaluator (its prediction goes into the metrics as ``predicted_step_time_s``).
    """

    name = "live"
    supports_steps = True
    applies = ddp_plan.LIVE_APPLIES

    def __init__(self, model, settings: LiveSettings | None = None, *, scenario=None, **options):
        from commtune.models.base import ModelProfile
        from commtune.probe.ddp_step import DDPTimingSpec
        from commtune.runtime.synthetic import sim_workload, synthetic_profile

        s = settings or LiveSettings(**options)
        if s.passes < 1:
            raise CommtuneError(f"passes must be >= 1, got {s.passes}")
        fwd, bwd = s.forward_s, s.backward_s
        if scenario is not None:
            if s.launch.world_size != scenario.cluster.world_size:
                raise CommtuneError(f"the live launch has {s.launch.world_size} ranks but the cluster "
                                    f"({scenario.cluster.describe()}) has {scenario.cluster.world_size} GPUs; "
                                    f"describe the same cluster (--cluster emulated, or a calibration of "
                                    f"{s.launch.world_size} ranks)")
            fwd = scenario.workload.forward_s if fwd is None else fwd
            bwd = scenario.workload.backward_s if bwd is None else bwd
        self.scenario = scenario
        self.settings = s
        if s.model_factory:  # the user's model itself: its recorded profile is ``model``
            self.profile = model
            DDPTimingSpec(self.profile, "emulated", s.mode, s.steps, s.warmup)  # validates
            self.workload = scenario.workload if scenario is not None else sim_workload(model, optimizer=True)
        else:
            if isinstance(model, ModelProfile) and model.measured_batch_size == 1 and s.scale == 1.0 \
                    and model.has_measured_times:
                self.profile = model
            else:
                self.profile = synthetic_profile(model, s.scale, 0.1 if fwd is None else fwd,
                                                 0.2 if bwd is None else bwd, s.share)
            DDPTimingSpec(self.profile, s.compute, s.mode, s.steps, s.warmup)  # validates
            self.workload = sim_workload(self.profile)
        self.max_steps = s.steps
        self.screening = SimulatorEvaluator(scenario, self.workload) if scenario is not None else None
        self.cache: dict[Knobs, dict] = {}  # complete measurements
        self.partial: dict[Knobs, dict] = {}  # pruned ones (the steps they ran)
        self.launches = 0  # worker groups started (one per evaluator)
        self.steps_run = 0
        self.startup_s: float | None = None  # the worker group's start (launch to ready)
        self.group = None  # commtune.runtime.worker_group: started on first use
        self.trial_log: list[dict] = []  # per measured trial: wall_s, overhead_s, steps_wall_s, rebuild_s, ...
        self.ray_handles: list | None = None  # the rank actors of a group placed on Ray (place_on_ray)
        self._owns_ray = False

    # -- helpers --------------------------------------------------------------------
    def key(self, knobs: Knobs) -> Knobs:
        """What the live run depends on (knobs DDP or FSDP2 ignores set to DDP's defaults)."""
        return ddp_plan.live_key(knobs)

    def check_space(self, space, what: str | None = None) -> None:
        ddp_plan.check_space(space, what or "--objective live")

    def _check(self, knobs: Knobs) -> None:
        if not ddp_plan.live_applicable(knobs):
            raise CommtuneError(f"live DDP cannot apply {knobs.describe()} (needs static fusion, flat all-reduce, "
                                f"or a sharded configuration for FSDP2)")

    def _metrics(self, r: dict) -> dict:
        times = [float(t) for t in r["step_times_s"]]
        passes = r.get("pass_medians_s", [float(statistics.median(times))])
        m = {"step_time_s": float(statistics.median(passes)), "step_times_s": times,
             "timed_steps": len(times), "num_buffers": len(r["buckets"]), "buckets": r["buckets"],
             "pass_medians_s": passes}
        if r.get("shard"):  # FSDP2: units sharded (num_buffers counts DDP buckets only)
            m["num_units"] = int(r["shard"]["units"])
        if r.get("host_busy_cores") is not None:  # the source rank's host over the timed steps (mean of the passes)
            m["host_busy_cores"], m["host_cores"] = float(r["host_busy_cores"]), r.get("host_cores")
        if self.screening is not None:
            m["predicted_step_time_s"] = float(self.screening.evaluate(self.key(Knobs.from_dict(r["knobs"])))["step_time_s"])
        return m

    def task(self) -> dict:
        """What every rank of the worker group builds and runs."""
        from commtune.runtime.synthetic import layer_specs

        s = self.settings
        task = {"mode": s.mode, "steps": s.steps, "warmup": s.warmup,
                "gpus_per_node": s.launch.world_size // s.launch.hosts}  # shard_group_size 0 under hybrid
        if s.model_factory:
            return {**task, "model_factory": s.model_factory, "record_options": dict(s.record_options or {})}
        return {**task, "layers": layer_specs(self.profile), "compute": s.compute}

    #: CPUs one rank's Ray actor reserves
    ray_cpus_per_rank = 1

    @property
    def ray_cpus(self) -> int:
        """CPUs the worker group takes on a Ray cluster (a local Ray instance adds them)."""
        return self.ray_cpus_per_rank * self.settings.launch.world_size

    def place_on_ray(self, owns_ray: bool = False) -> bool:
        """``--backend ray``: start the worker group as Ray actors (:mod:`commtune.runtime.ray_group`)
        on the connected cluster, once; every Ray trial (a pickled copy of this evaluator) then
        runs on the same actors. ``owns_ray``: :meth:`close` also shuts Ray down. Returns True
        (Ray must stay up until :meth:`close`)."""
        from commtune.runtime.ray_group import RayWorkerGroup
        from commtune.runtime.worker_group import JobLaunch

        s = self.settings
        if isinstance(s.launch, JobLaunch) or s.launch.hosts > 1:
            raise CommtuneError("--backend ray places the live ranks on the Ray cluster itself: use --ranks N "
                                "(not --cluster emulated or a torchrun job)")
        self.close()
        self.launches += 1
        self.group = RayWorkerGroup(self.task(), s.launch.world_size, timeout_s=s.launch.timeout_s,
                                    engine=s.launch.engine, num_cpus=self.ray_cpus_per_rank)
        self.startup_s = self.group.startup_s
        self.ray_handles = self.group.handles
        self._owns_ray = owns_ray
        return True

    def _group(self):
        """The persistent worker group (started on first use): ranks launched from here, or --
        under torchrun (``JobLaunch``) -- this job's ranks; in a Ray trial, the group the search
        placed on Ray."""
        if self.group is None and self.ray_handles:
            from commtune.runtime.ray_group import RayGroupClient

            self.group = RayGroupClient(self.ray_handles, self.settings.launch.timeout_s)
        if self.group is None:
            from commtune.probe.live_group import WorkerGroup
            from commtune.runtime.worker_group import InJobGroup, JobLaunch

            s = self.settings
            self.launches += 1
            t0 = time.perf_counter()
            if isinstance(s.launch, JobLaunch):
                self.group = InJobGroup(self.task(), s.launch.timeout_s, device=s.launch.init())
            else:
                self.group = WorkerGroup(s.launch, self.task())
            self.startup_s = time.perf_counter() - t0
        return self.group

    def _trial(self, knobs: Knobs, on_step=None) -> dict:
        r = self._group().trial(knobs, on_step)
        self.steps_run += len(r["step_times_s"])
        self.trial_log.append({k: r[k] for k in ("wall_s", "overhead_s", "steps_wall_s", "rebuild_s", "decision_wait_s",
                                                 "pruned")})
        return r

    def close(self) -> None:
        """Stop the worker group (its ranks exit; a Ray trial's copy only detaches from it)."""
        if self.group is not None:
            group, self.group = self.group, None
            try:
                group.close()
            finally:
                if self._owns_ray:
                    import ray

                    self._owns_ray, self.ray_handles = False, None
                    ray.shutdown()

    # -- Evaluator ------------------------------------------------------------------
    def evaluate(self, knobs: Knobs) -> dict:
        return self.evaluate_many([knobs])[0]

    def evaluate_many(self, configs: Sequence[Knobs]) -> list[dict]:
        """Several configurations on the same ranks. With ``passes`` > 1 the list is timed
        that many times, alternating its order (forward, reverse, ...), so slow drifts of
        the host load hit every configuration alike; the step times of all passes are pooled.
        Then, up to ``repeat_noisy`` times, the configurations whose pass medians still
        disagree by more than :data:`NOISY_PASSES` (:func:`pass_disagreement`) get one more
        pass; a configuration's value is the median of its pass medians (one disturbed pass
        out of three does not move it)."""
        for c in configs:
            self._check(c)
        keys = [self.key(c) for c in configs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if todo:
            passes = self.settings.passes
            order = [k for p in range(passes) for k in (todo if p % 2 == 0 else todo[::-1])]
            pooled: dict[Knobs, list[dict]] = {}
            for k in order:
                pooled.setdefault(k, []).append(self._trial(k))
            for extra in range(self.settings.repeat_noisy if passes > 1 else 0):
                noisy = [k for k in todo if pass_disagreement(pooled[k]) > NOISY_PASSES]
                for k in (noisy if (passes + extra) % 2 == 0 else noisy[::-1]):
                    pooled[k].append(self._trial(k))
            for k, rs in pooled.items():
                r = dict(rs[-1])
                r["step_times_s"] = [t for x in rs for t in x["step_times_s"]]
                if len(rs) > 1:
                    r["pass_medians_s"] = [float(statistics.median(x["step_times_s"])) for x in rs]
                r["host_busy_cores"] = mean_busy_cores(rs)
                self.cache[k] = self._metrics(r)
                self.partial.pop(k, None)
        return [dict(self.cache[k]) for k in keys]

    def evaluate_steps(self, knobs: Knobs, on_step: Callable[[int, list[float]], bool]) -> dict:
        """Like :meth:`evaluate`, calling ``on_step(step, step_times_so_far)`` after each
        timed step (step = 1, 2, ...); when it returns True the run stops there and the
        metrics carry ``pruned: True`` (and are not cached)."""
        self._check(knobs)
        k = self.key(knobs)
        # A configuration measured before (fully, or until it was pruned) is replayed first:
        # re-sampled configurations cost no trial unless the pruner now lets them go further.
        known = self.cache[k] if k in self.cache else self.partial.get(k)
        replayed = 0
        if known is not None:
            times = known["step_times_s"]
            for i in range(1, len(times) + 1):
                replayed = i
                if on_step(i, times[:i]):
                    return {**known, "step_time_s": float(statistics.median(times[:i])),
                            "step_times_s": times[:i], "timed_steps": i, "pruned": True, "replayed": True}
            if k in self.cache:
                return {**known, "replayed": True}
        # steps already reported in the replay are not reported again
        r = self._trial(k, lambda i, times: False if i <= replayed else bool(on_step(i, times)))
        m = self._metrics(r)
        if r["pruned"]:
            m["pruned"] = True
            self.partial[k] = m
        else:
            self.cache[k] = m
            self.partial.pop(k, None)
        return dict(m)

    def lower_bound_s(self) -> float | None:
        return self.screening.lower_bound_s() if self.screening is not None else None

    def study_key(self) -> str:
        """Live settings change what is measured: they are part of the study name."""
        import json

        return f"{self.name}:{json.dumps(self.settings.describe(), sort_keys=True, default=str)}"

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, **self.settings.describe()}
        if self.scenario is not None:
            d["scenario"] = self.scenario.describe()
        return d

    def __getstate__(self):  # Ray ships evaluators to its workers: without the running group
        return {**self.__dict__, "group": None, "_owns_ray": False}


@register_evaluator("live")
def _live(scenario, settings: LiveSettings | None = None, **options) -> Evaluator:
    """Measured DDP or FSDP2 steps of the scenario's model; options: ``settings=LiveSettings(...)``."""
    return LiveEvaluator(scenario.model, settings, scenario=scenario, **options)
