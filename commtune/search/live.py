"""The live objective: search against measured DDP step times.

``LiveObjective`` (registered as ``--objective live``) times real PyTorch DDP
steps of the synthetic model that mirrors the scenario's model profile
(:mod:`commtune.probe.ddp_step`: one module per layer, tensors scaled by
``scale``, compute emulated by sleeping to the scenario's per-layer
timeline or real CPU work) on ranks launched by the search process:

* ``--ranks N``: N local processes on 127.0.0.1 (gloo over loopback);
* ``--cluster emulated``: one rank per host of the emulated cluster that is up
  (``commtune cluster up``); the simulator side of the scenario is built
  from the cluster's state (:func:`cluster_from_state`).

Real multi-machine clusters are not launched from the search process (it
spawns its ranks with ``subprocess``, on this machine's namespaces only);
see ``docs/search.md`` for how to search there (calibrate with
``commtune probe`` under torchrun, then search the calibrated simulator).

Only knobs DDP can apply are measured: static fusion (bucket cap, first
bucket), streams (process groups) and wire precision (fp16 hook); a space
that varies anything else is refused (:func:`check_live_space`).

The ranks start once per search: a persistent worker group
(:mod:`commtune.runtime.worker_group`) in which each trial reconfigures DDP in
place. For pruning rank 0 reports every timed step and the search answers
go/stop before the next one, so a pruned trial stops right after the step that
condemned it (:meth:`LiveObjective.evaluate_steps`). :meth:`LiveObjective.close`
stops the ranks.

:func:`confirm_live` is the multi-fidelity step: the simulator's top K
distinct configurations, measured live on the same group.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Callable

from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, Knobs
from commtune.search.objective import Objective, SimulatorObjective

#: knobs the live DDP run applies (with fusion_policy fixed to static, hierarchical to False)
LIVE_KNOBS = ("fusion_threshold_bytes", "first_bucket_bytes", "num_streams", "stream_mode", "wire_precision")
LIVE_FIXED = {"fusion_policy": "static", "hierarchical": False}


# --------------------------------------------------------------------------- space and cluster

def live_applicable(knobs: Knobs) -> bool:
    return all(getattr(knobs, k) == v for k, v in LIVE_FIXED.items())


def check_live_space(space, what: str = "--objective live") -> None:
    """One-line error if the space varies (or fixes) knobs live DDP cannot apply."""
    varied = [p.name for p in space.params
              if p.name not in LIVE_KNOBS
              and not (p.name in LIVE_FIXED and p.kind == "choice" and list(p.choices) == [LIVE_FIXED[p.name]])]
    if varied:
        raise CommtuneError(f"{what} measures PyTorch DDP, which cannot apply {', '.join(varied)} "
                            f"(space {space.name!r} varies them); use --space ddp or fix them in the space")
    bad = [f"{k}={getattr(space.base, k)}" for k, v in LIVE_FIXED.items()
           if k not in space.param_names and getattr(space.base, k) != v]
    if bad:
        raise CommtuneError(f"{what} measures PyTorch DDP (static buckets, flat all-reduce); space "
                            f"{space.name!r} fixes {', '.join(bad)}; use --space ddp")


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


# --------------------------------------------------------------------------- objectives

class WorkloadSimulatorObjective(SimulatorObjective):
    """The simulator on a given workload (the live synthetic model's) and the scenario's cluster."""

    name = "simulator"

    def __init__(self, scenario, workload):
        from simulators import Simulator

        self.scenario = scenario
        self.workload = workload
        self.simulator = Simulator(workload, scenario.cluster)

    def lower_bound_s(self) -> float:
        from simulators.bounds import step_lower_bound_s

        return float(step_lower_bound_s(self.workload, self.simulator.network))

    def __getstate__(self):
        return {"scenario": self.scenario, "workload": self.workload}

    def __setstate__(self, state):
        self.__init__(state["scenario"], state["workload"])


@dataclasses.dataclass(frozen=True)
class LiveSettings:
    """How live trials run (the synthetic model and the launch)."""

    launch: Any  # commtune.probe.launch.LaunchSpec
    scale: float = 0.25
    compute: str = "emulated"
    forward_s: float | None = None  # None: the scenario's forward time
    backward_s: float | None = None
    steps: int = 8
    warmup: int = 1
    mode: str | None = None  # None: each configuration's stream_mode
    model_factory: str | None = None  # "pkg.mod:make_model": the user's model instead of the synthetic mirror
    record_options: dict | None = None  # its synthetic inputs: batch_size, input_shape, seq_len, vocab

    def describe(self) -> dict[str, Any]:
        d = {"launch": self.launch.describe(), "scale": self.scale, "compute": self.compute,
             "forward_s": self.forward_s, "backward_s": self.backward_s, "steps": self.steps,
             "warmup": self.warmup, "mode": self.mode}
        if self.model_factory:
            d.update(model_factory=self.model_factory, record_options=self.record_options)
        return d


class LiveObjective(Objective):
    """Measured DDP step time of the scenario's synthetic model (median over timed steps)."""

    name = "live"
    supports_steps = True

    def __init__(self, scenario, settings: LiveSettings | None = None, **options):
        from commtune.probe.ddp_step import DDPTimingSpec, sim_workload, synthetic_profile

        self.scenario = scenario
        self.settings = settings or LiveSettings(**options)
        s = self.settings
        if s.launch.world_size != scenario.cluster.world_size:
            raise CommtuneError(f"the live launch has {s.launch.world_size} ranks but the cluster "
                                f"({scenario.cluster.describe()}) has {scenario.cluster.world_size} GPUs; "
                                f"describe the same cluster (--cluster emulated, or a calibration of {s.launch.world_size} ranks)")
        w = scenario.workload
        fwd = w.forward_s if s.forward_s is None else s.forward_s
        bwd = w.backward_s if s.backward_s is None else s.backward_s
        if s.model_factory:  # the user's model itself (its recorded profile is the scenario's)
            self.profile = scenario.model
            DDPTimingSpec(self.profile, "emulated", s.mode, s.steps, s.warmup)  # validates
            self.workload = w
        else:
            self.profile = synthetic_profile(scenario.model, s.scale, fwd, bwd)
            DDPTimingSpec(self.profile, s.compute, s.mode, s.steps, s.warmup)  # validates
            self.workload = sim_workload(self.profile)
        self.screening_objective = WorkloadSimulatorObjective(scenario, self.workload)
        self.cache: dict[Knobs, dict] = {}  # complete measurements
        self.partial: dict[Knobs, dict] = {}  # pruned ones (the steps they ran)
        self.launches = 0  # worker groups started (one per search)
        self.steps_run = 0
        self.startup_s: float | None = None  # the worker group's start (launch to ready)
        self.group = None  # commtune.runtime.worker_group.WorkerGroup, started on first use
        self.trial_log: list[dict] = []  # per measured trial: wall_s, overhead_s, steps_wall_s, rebuild_s, pruned

    # -- helpers --------------------------------------------------------------------
    @staticmethod
    def key(knobs: Knobs) -> Knobs:
        """What the live run depends on (knobs DDP ignores set to fixed values)."""
        return Knobs.from_dict({n: getattr(knobs, n) for n in LIVE_KNOBS}, base=DDP_DEFAULT)

    def _check(self, knobs: Knobs) -> None:
        if not live_applicable(knobs):
            raise CommtuneError(f"live DDP cannot apply {knobs.describe()} (needs static fusion, flat all-reduce)")

    def _metrics(self, r: dict) -> dict:
        times = [float(t) for t in r["step_times_s"]]
        predicted = float(self.screening_objective.evaluate(self.key(Knobs.from_dict(r["knobs"])))["step_time_s"])
        return {"step_time_s": float(statistics.median(times)), "step_times_s": times,
                "timed_steps": len(times), "num_buffers": len(r["buckets"]), "predicted_step_time_s": predicted}

    def task(self) -> dict:
        """What every rank of the worker group builds and runs."""
        from commtune.probe.ddp_step import _layer_specs

        s = self.settings
        task = {"mode": s.mode, "steps": s.steps, "warmup": s.warmup}
        if s.model_factory:
            return {**task, "model_factory": s.model_factory, "record_options": dict(s.record_options or {})}
        return {**task, "layers": _layer_specs(self.profile), "compute": s.compute}

    def _group(self):
        """The persistent worker group (started on first use, one launch per search): ranks
        launched from here, or -- under torchrun (``JobLaunch``) -- this job's ranks."""
        if self.group is None:
            import time

            from commtune.runtime.worker_group import InJobGroup, JobLaunch, WorkerGroup

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
        """Stop the worker group (the ranks exit)."""
        if self.group is not None:
            group, self.group = self.group, None
            group.close()

    # -- Objective ------------------------------------------------------------------
    def evaluate(self, knobs: Knobs) -> dict:
        return self.evaluate_many([knobs])[0]

    def evaluate_many(self, configs: list[Knobs]) -> list[dict]:
        """Several configurations, each measured once (on the same ranks)."""
        for c in configs:
            self._check(c)
        keys = [self.key(c) for c in configs]
        for k in dict.fromkeys(k for k in keys if k not in self.cache):
            self.cache[k] = self._metrics(self._trial(k))
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
        return self.screening_objective.lower_bound_s()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scenario": self.scenario.describe(), **self.settings.describe()}

    def __getstate__(self):  # Ray ships objectives to its workers: without the running group
        return {**self.__dict__, "group": None}


# --------------------------------------------------------------------------- multi-fidelity

def top_distinct(study, space, k: int) -> list[tuple[Knobs, float]]:
    """The best ``k`` complete trials of a study whose live keys differ."""
    from optuna.trial import TrialState

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: (t.value, t.number))
    out: list[tuple[Knobs, float]] = []
    seen: set[Knobs] = set()
    for t in done:
        knobs = space.knobs_from_params(t.params)
        key = LiveObjective.key(knobs)
        if key in seen:
            continue
        seen.add(key)
        out.append((knobs, float(t.value)))
        if len(out) >= k:
            break
    return out


def confirm_live(live: LiveObjective, candidates: list[tuple[Knobs, float]]) -> list[dict]:
    """Measure the candidates live (one launch); rows sorted by measured step time."""
    measured = live.evaluate_many([k for k, _ in candidates])
    rows = []
    for rank, ((knobs, pred), m) in enumerate(zip(candidates, measured), start=1):
        rows.append({"sim_rank": rank, "knobs": knobs.to_dict(), "active": knobs.active(),
                     "predicted_step_time_s": pred, "measured_step_time_s": m["step_time_s"],
                     "step_times_s": m["step_times_s"]})
    rows.sort(key=lambda r: (r["measured_step_time_s"], r["sim_rank"]))
    return rows
