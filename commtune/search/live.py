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

Each trial is one launch. For pruning the run streams: rank 0 reports every
timed step, and the driver answers go/stop before the next one
(:func:`commtune.probe.ddp_step._stream_step`), so a pruned trial stops
right after the step that condemned it (:meth:`LiveObjective.evaluate_steps`).

:func:`confirm_live` is the multi-fidelity step: the simulator's top K
distinct configurations, measured live in one launch.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
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

    def describe(self) -> dict[str, Any]:
        return {"launch": self.launch.describe(), "scale": self.scale, "compute": self.compute,
                "forward_s": self.forward_s, "backward_s": self.backward_s, "steps": self.steps,
                "warmup": self.warmup, "mode": self.mode}


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
        self.profile = synthetic_profile(scenario.model, s.scale, fwd, bwd)
        DDPTimingSpec(self.profile, s.compute, s.mode, s.steps, s.warmup)  # validates
        self.workload = sim_workload(self.profile)
        self.screening_objective = WorkloadSimulatorObjective(scenario, self.workload)
        self.cache: dict[Knobs, dict] = {}  # complete measurements
        self.partial: dict[Knobs, dict] = {}  # pruned ones (the steps they ran)
        self.launches = 0
        self.steps_run = 0

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

    def _time(self, configs: list[Knobs], stream: dict | None = None) -> list[dict]:
        from commtune.probe.ddp_step import time_ddp_configs

        s = self.settings
        self.launches += 1
        res = time_ddp_configs(self.profile, configs, s.launch, s.steps, s.warmup, compute=s.compute,
                               mode=s.mode, stream=stream)
        self.steps_run += sum(len(r["step_times_s"]) for r in res)
        return res

    # -- Objective ------------------------------------------------------------------
    def evaluate(self, knobs: Knobs) -> dict:
        self._check(knobs)
        k = self.key(knobs)
        if k not in self.cache:
            self.cache[k] = self._metrics(self._time([k])[0])
        return dict(self.cache[k])

    def evaluate_many(self, configs: list[Knobs]) -> list[dict]:
        """Several configurations in one launch (ranks start once)."""
        for c in configs:
            self._check(c)
        keys = [self.key(c) for c in configs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if todo:
            for k, r in zip(todo, self._time(todo)):
                self.cache[k] = self._metrics(r)
        return [dict(self.cache[k]) for k in keys]

    def evaluate_steps(self, knobs: Knobs, on_step: Callable[[int, list[float]], bool]) -> dict:
        """Like :meth:`evaluate`, calling ``on_step(step, step_times_so_far)`` after each
        timed step (step = 1, 2, ...); when it returns True the run stops there and the
        metrics carry ``pruned: True`` (and are not cached)."""
        self._check(knobs)
        k = self.key(knobs)
        # A configuration measured before (fully, or until it was pruned) is replayed first:
        # re-sampled configurations cost no launch unless the pruner now lets them go further.
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
        with tempfile.TemporaryDirectory(prefix="ct-live-") as d:
            box: dict[str, Any] = {}

            def target() -> None:
                try:
                    box["res"] = self._time([k], stream={"dir": d, "driver_pid": os.getpid()})[0]
                except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
                    box["err"] = exc

            th = threading.Thread(target=target, daemon=True, name="ct-live-launch")
            th.start()
            steps_file, decision = Path(d) / "steps", Path(d) / "decision"
            times: list[float] = []
            stopped = False
            try:
                while True:
                    alive = th.is_alive()
                    try:
                        lines = steps_file.read_text().splitlines()
                    except OSError:
                        lines = []
                    for line in lines[len(times):]:
                        parts = line.split()
                        if len(parts) != 3:
                            break
                        times.append(float(parts[2]))
                        if stopped or len(times) <= replayed:  # steps already reported in the replay
                            stop = False
                        else:
                            stop = bool(on_step(len(times), list(times)))
                        stopped = stopped or stop
                        tmp = decision.with_suffix(".tmp")
                        tmp.write_text(f"0 {len(times)} {'stop' if stop else 'go'}\n")
                        os.replace(tmp, decision)
                    if not alive:
                        break
                    time.sleep(0.003)
            except BaseException:
                (decision).write_text(f"0 {len(times) + 1} stop\n")  # ranks also stop when we die
                raise
            th.join()
            if "err" in box:
                raise box["err"]
        m = self._metrics(box["res"])
        if stopped:
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
