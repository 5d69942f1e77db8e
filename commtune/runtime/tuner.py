"""Online tuning on the live job: time real DDP steps under a few configurations, lock in the best.

Rank 0 drives an Optuna study (ask/tell; in memory or a given storage). At each
trial boundary, after the same number of steps on every rank, the ranks agree
on the trial's time (the slowest rank's median, an all-reduce MAX) and rank 0
broadcasts the next configuration (``dist.broadcast_object_list`` on a small
gloo control group). Knobs that change DDP's buckets, streams or hook are
applied by rebuilding the DDP wrapper around the same module: the parameters
are the same objects, so the optimizer stays valid. The first
``warmup_steps`` of each trial are discarded (bucket rebuild, new groups).

After ``trials`` configurations the best is locked in and written as a profile
(atomically, rank 0). With ``drift`` set, every ``drift_window`` locked-in
steps the ranks compare the median step time with the locked-in time; past
``(1 + drift)`` times it, a new short round (``retune_trials``) starts from the
best configurations so far -- tuning that follows a changing network.

The sharded knobs (FSDP2) are not tuned here: re-sharding builds new parameter
objects, which the training loop's optimizer does not hold. The live search
(``commtune search --objective live``) measures them on fresh copies instead.

In a training loop::

    tuner = AutoTuner(module, trials=8, initial=[profile.knobs], profile_out="tuned.json")
    for x, y in data:
        with tuner.timed_step() as model:   # model = tuner.model, the current DDP wrapper
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import sys
import time
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, KNOBS, SHARDING_KNOBS, Knobs
from commtune.profiles import Profile, load_profile, provenance, save_profile
from commtune.runtime.ddp_plan import APPLIES, DDPPlan, plan_for
from commtune.runtime.fingerprint import module_profile
from commtune.runtime.worker_loop import ControlChannel, Reconfigurer, TrialTimer
from commtune.search.space import Param, parse_param
from commtune.stats import quantile
from commtune.units import MiB


#: Knobs the DDP runtime can tune live: those the DDP plan applies.
TUNABLE = APPLIES

#: Default live search space: bucket cap and streams (fp32 on the wire: fp16
#: changes the numerics, so it is opt-in).
DEFAULT_SPACE: dict[str, Any] = {
    "fusion_threshold_bytes": [1 * MiB, 4 * MiB, 25 * MiB],
    "num_streams": [1, 2, 4],
    "stream_mode": list(KNOBS["stream_mode"].choices),
}


# ------------------------------------------------------------------ search space

def parse_space(space: dict[str, Any] | None) -> tuple[dict[str, Param], dict[str, Any]]:
    """``(searched params, fixed values)`` from a space mapping.

    Per knob (one of :data:`TUNABLE`): the grammar of ``commtune search``'s
    spaces (:func:`commtune.search.space.parse_param`: ``{choices: [...]}``,
    ``{value: V}``, ``{low: L, high: H, log: bool, step: S}``, a plain value;
    sizes accept ``"4MiB"``), and a list as short for ``{choices: [...]}``.
    ``fusion_policy: static`` is accepted (the only policy DDP has).
    """
    space = DEFAULT_SPACE if space is None else space
    params: dict[str, Param] = {}
    fixed: dict[str, Any] = {}
    for name, spec in space.items():
        if name == "fusion_policy":
            if spec not in ("static", {"value": "static"}, ["static"]):
                raise CommtuneError("space: DDP buckets statically; fusion_policy can only be 'static'")
            continue
        if name in SHARDING_KNOBS:
            raise CommtuneError(f"space: {name!r} is a sharded knob: the AutoTuner tunes DDP in place, and "
                                f"re-sharding would replace the parameters your optimizer holds; search the sharded "
                                f"knobs with commtune search --objective live --space fsdp (same ranks, fresh copies)")
        if name not in TUNABLE:
            allowed = ", ".join(TUNABLE)
            raise CommtuneError(f"space: {name!r} cannot be tuned on a live DDP job; tunable: {allowed}")
        if isinstance(spec, (list, tuple)):
            spec = {"choices": list(spec)}
        p, value = parse_param("space", name, spec)
        if p is None:
            fixed[name] = value
        else:
            params[name] = p
    return params, fixed


# ------------------------------------------------------------------ configurations

@dataclasses.dataclass(frozen=True)
class Config:
    """One live configuration (how streams are used is ``knobs.stream_mode``)."""

    knobs: Knobs

    @property
    def stream_mode(self) -> str:
        return self.knobs.stream_mode

    @property
    def plan(self) -> DDPPlan:
        return plan_for(self.knobs)

    def key(self) -> tuple:
        p = self.plan
        mode = p.stream_mode if p.num_streams > 1 else "-"
        return (p.bucket_cap_bytes, p.first_bucket_bytes, p.num_streams, p.wire_precision, mode)

    def params(self) -> dict[str, Any]:
        return {n: getattr(self.knobs, n) for n in TUNABLE}

    def describe(self) -> str:
        return self.plan.describe()

    def to_dict(self) -> dict[str, Any]:
        return {"knobs": self.knobs.to_dict(), "stream_mode": self.stream_mode}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        knobs = dict(d["knobs"])
        if "stream_mode" not in knobs and "stream_mode" in d:  # written before stream_mode was a knob
            knobs["stream_mode"] = d["stream_mode"]
        return cls(Knobs.from_dict(knobs))


def _as_config(item: Any, base: Knobs) -> Config:
    """An ``initial`` entry: Knobs, Profile, profile path, Config, or {knob: value}."""
    if isinstance(item, (str, os.PathLike)):
        item = load_profile(item)
    if isinstance(item, Config):
        return item
    knobs = item.knobs if isinstance(item, Profile) else item
    sharding = knobs.sharding if isinstance(knobs, Knobs) else item.get("sharding", "none") if isinstance(item, dict) else "none"
    if sharding != "none":
        raise CommtuneError(f"initial configurations of the AutoTuner run DDP; this one is sharded (sharding "
                            f"{sharding}): apply it with commtune.runtime.shard")
    if isinstance(item, Profile):
        return Config(dataclasses.replace(item.knobs, fusion_policy="static"))
    if isinstance(item, Knobs):
        return Config(dataclasses.replace(item, fusion_policy="static"))
    if isinstance(item, dict):
        return Config(Knobs.from_dict({**item, "fusion_policy": "static"}, base=base))
    raise CommtuneError(f"initial configurations must be Knobs, Profiles, profile paths or dicts, "
                        f"got {type(item).__name__}")


# ------------------------------------------------------------------ the tuner

class AutoTuner:
    """Tune DDP's communication knobs during the first steps of real training.

    Collective: construct it on every rank, after ``dist.init_process_group``,
    with the same arguments; call :meth:`step` (or use :meth:`timed_step`)
    once per training step on every rank. ``tuner.model`` is the current DDP
    wrapper: fetch it every step (a replaced wrapper refuses to run).

    ``space``: see :func:`parse_space` (default :data:`DEFAULT_SPACE`).
    ``trials``: configurations timed per round (enqueued ``initial`` ones
    included). ``initial``: configurations tried first (Knobs, e.g. a
    profile's or ``Simulator.run_batch`` top-k, Profiles, profile paths,
    dicts); knobs not in the space come from ``base`` (default: the first
    initial configuration, else DDP's defaults). ``storage``/``study_name``:
    an Optuna storage (URL or object) to keep the study; default in memory.
    ``sampler``: an Optuna sampler, or a sampler name as ``commtune search --sampler``
    takes (:func:`commtune.search.samplers.make_sampler`); default TPE.
    ``drift``: re-tune when the median of ``drift_window`` locked-in steps
    exceeds ``(1 + drift)`` x the locked-in time (None: never).
    ``cluster``: the ClusterSpec recorded in the written profile (default:
    the initial profile's when its world size matches, else a ``live`` one).
    """

    def __init__(self, module: torch.nn.Module, space: dict[str, Any] | None = None, *, trials: int = 8,
                 steps_per_trial: int = 3, warmup_steps: int = 1, initial: Sequence[Any] | Any = (),
                 profile_out: str | os.PathLike | None = None, drift: float | None = 0.2, drift_window: int = 10,
                 retune_trials: int | None = None, storage: Any = None, study_name: str | None = None,
                 seed: int = 0, sampler: Any = None, base: Knobs | None = None, process_group: Any = None,
                 cluster: ClusterSpec | None = None, model_info: dict[str, Any] | None = None,
                 ddp_kwargs: dict[str, Any] | None = None, hook_options: dict[str, Any] | None = None,
                 verbose: bool = True) -> None:
        if not dist.is_initialized():
            raise CommtuneError("AutoTuner needs torch.distributed initialized (dist.init_process_group)")
        for name, value, low in (("trials", trials, 1), ("steps_per_trial", steps_per_trial, 1),
                                 ("warmup_steps", warmup_steps, 0), ("drift_window", drift_window, 1)):
            if not isinstance(value, int) or value < low:
                raise CommtuneError(f"AutoTuner: {name} must be an integer >= {low}, got {value!r}")
        if drift is not None and not drift > 0:
            raise CommtuneError(f"AutoTuner: drift must be > 0 (or None to never re-tune), got {drift!r}")
        self.module = module
        self.trials, self.steps_per_trial, self.warmup_steps = trials, steps_per_trial, warmup_steps
        self.drift, self.drift_window = drift, drift_window
        self.retune_trials = retune_trials or max(2, trials // 2)
        self.profile_out = profile_out
        self.process_group = process_group
        self.ddp_kwargs = dict(ddp_kwargs or {})
        self.hook_options = hook_options
        self.model_info = dict(model_info or {})
        self.verbose = verbose
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size(process_group)
        self.storage, self.study_name_base, self.seed, self._sampler = storage, study_name, seed, sampler
        if isinstance(sampler, str):
            from commtune.search.samplers import make_sampler

            make_sampler(sampler, seed)  # an unknown name fails here, on every rank

        if initial is None:
            initial = []
        elif not isinstance(initial, (list, tuple)):
            initial = [initial]
        self._initial_profile = next((p for p in initial if isinstance(p, Profile)), None)
        first = _as_config(initial[0], DDP_DEFAULT) if initial else None
        self.base = dataclasses.replace(base or (first.knobs if first else DDP_DEFAULT), fusion_policy="static")
        self.initial = [_as_config(item, self.base) for item in initial]
        self.params, fixed = parse_space(space)
        self.base = Knobs.from_dict(fixed, base=self.base)
        for cfg in self.initial:  # room for every enqueued value
            for name, value in cfg.params().items():
                if name in self.params:
                    self.params[name] = self.params[name].widen(value)
        self.cluster = cluster or self._default_cluster()

        # Shared with the live search's worker group (commtune.runtime.worker_loop): the control
        # channel (cheap gloo collectives whatever DDP's backend), the DDP rebuilds, the step bookkeeping.
        self._channel = ControlChannel(process_group)
        self._src = self._channel.src
        self._reconf = Reconfigurer(module, process_group, hook_options=hook_options, **self.ddp_kwargs)

        self.history: list[dict[str, Any]] = []  # every timed configuration, all rounds
        self.round = 0
        self.locked: Config | None = None
        self.locked_time_s: float | None = None
        self.step_count = 0
        self.profile_path: str | None = None
        self._config: Config | None = None
        self._timer = TrialTimer(warmup_steps, steps_per_trial)
        self._window: list[float] = []
        self._study: Any = None
        self._trial: Any = None
        self._round_done: dict[tuple, float] = {}
        self._round_count = 0
        self._in_round = True
        self._enqueued: dict[tuple, Config] = {}
        self._start_round(self.initial)

    # -------------------------------------------------------------- public

    @property
    def model(self) -> Any:
        """The current ``DistributedDataParallel`` wrapper."""
        return self._reconf.model

    @property
    def config(self) -> Config:
        return self._config

    @property
    def tuning(self) -> bool:
        """True while a tuning round runs (False once a configuration is locked in)."""
        return self._in_round

    @property
    def best(self) -> dict[str, Any] | None:
        rows = [h for h in self.history if h["round"] == self.round]
        return min(rows, key=lambda h: h["median_s"]) if rows else None

    @contextlib.contextmanager
    def timed_step(self) -> Iterator[Any]:
        """``with tuner.timed_step() as model: ...`` times the block and calls :meth:`step`."""
        cuda = any(p.is_cuda for p in self.module.parameters())
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield self._reconf.model
        if cuda:
            torch.cuda.synchronize()
        self.step(time.perf_counter() - t0)

    def step(self, step_time_s: float) -> None:
        """Record one training step's time (every rank, every step); may switch configuration."""
        self.step_count += 1
        if self._in_round:
            if self._timer.add(step_time_s):
                self._end_trial()
        elif self.drift is not None:
            self._window.append(float(step_time_s))
            if len(self._window) >= self.drift_window:
                med = self._max_over_ranks(statistics.median(self._window))
                self._window = []
                if med > (1.0 + self.drift) * self.locked_time_s:
                    self._log(f"step time drifted: median {med * 1e3:.1f} ms > (1+{self.drift:g}) x locked-in "
                              f"{self.locked_time_s * 1e3:.1f} ms; re-tuning")
                    self._start_round(self._top_configs(max(1, self.retune_trials // 2)))

    # -------------------------------------------------------------- rounds and trials

    def _start_round(self, enqueue: Sequence[Config]) -> None:
        self.round += 1
        self._in_round = True
        self._round_done = {}
        self._round_count = 0
        self._round_limit = self.trials if self.round == 1 else self.retune_trials
        self._enqueued = {self._space_key(c.params()): c for c in enqueue}
        if self.rank == self._src:
            self._study = self._make_study()
            seen = set()
            for cfg in enqueue:
                if cfg.key() not in seen:
                    seen.add(cfg.key())
                    self._study.enqueue_trial({n: v for n, v in cfg.params().items() if n in self.params},
                                              skip_if_exists=False)
            first = self._ask()
            msg = {"action": "trial", "config": first.to_dict()}
        else:
            msg = None
        self._apply(self._bcast(msg))

    @property
    def sampler_name(self) -> str:
        s = self._sampler
        return s if isinstance(s, str) else type(s).__name__ if s is not None else "TPESampler"

    def _make_study(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if isinstance(self._sampler, str):  # a name, as `commtune search --sampler` takes
            from commtune.search.samplers import make_sampler

            sampler = make_sampler(self._sampler, self.seed + self.round)
        else:
            sampler = self._sampler or optuna.samplers.TPESampler(seed=self.seed + self.round,
                                                                  n_startup_trials=max(2, self.trials // 2))
        name = f"{self.study_name_base or 'commtune-live'}-round{self.round}"
        return optuna.create_study(direction="minimize", storage=self.storage, study_name=name,
                                   sampler=sampler, load_if_exists=self.storage is not None)

    def _space_key(self, params: dict[str, Any]) -> tuple:
        return tuple(sorted((n, v) for n, v in params.items() if n in self.params))

    def _ask(self) -> Config | None:
        """Rank 0: the next configuration not yet timed this round (None: space exhausted)."""
        space_size = math.prod(p.size for p in self.params.values()) if self.params else 1
        for _ in range(200):
            if len(self._round_done) >= space_size:
                return None
            trial = self._study.ask()
            values = {name: p.suggest(trial) for name, p in self.params.items()}
            key = self._space_key(values)
            if key in self._enqueued:  # an enqueued configuration keeps the knobs the space does not vary
                cfg = self._enqueued[key]
            else:
                cfg = Config(Knobs.from_dict(values, base=self.base))
            if cfg.key() in self._round_done:  # duplicate: reuse the time, ask again
                self._study.tell(trial, self._round_done[cfg.key()])
                continue
            self._trial = trial
            return cfg
        return None

    def _end_trial(self) -> None:
        kept = list(self._timer.timed)
        median = self._max_over_ranks(self._timer.median())
        cfg = self._config
        self.history.append({"round": self.round, "config": cfg.to_dict(), "describe": cfg.describe(),
                             "median_s": median, "p90_s": quantile(kept, 0.9), "times_s": list(kept)})
        self._round_done[cfg.key()] = median
        self._round_count += 1
        self._log(f"round {self.round} trial {self._round_count}/{self._round_limit}: {cfg.describe()} -> "
                  f"median {median * 1e3:.1f} ms")
        if self.rank == self._src:
            self._study.tell(self._trial, median)
            self._trial = None
            nxt = self._ask() if self._round_count < self._round_limit else None
            if nxt is None:
                best = min(self._round_done.items(), key=lambda kv: kv[1])[0]
                cfg_best = next(Config.from_dict(h["config"]) for h in self.history
                                if h["round"] == self.round and Config.from_dict(h["config"]).key() == best)
                msg = {"action": "lock", "config": cfg_best.to_dict()}
            else:
                msg = {"action": "trial", "config": nxt.to_dict()}
        else:
            msg = None
        self._apply(self._bcast(msg))

    def _apply(self, msg: dict[str, Any]) -> None:
        cfg = Config.from_dict(msg["config"])
        self._timer = TrialTimer(self.warmup_steps, self.steps_per_trial)
        self._reconf.apply(cfg.plan)  # rebuilds DDP only when the configuration changes it
        self._config = cfg
        if msg["action"] == "lock":
            self._in_round = False
            self._study = None
            self.locked = cfg
            self.locked_time_s = min(h["median_s"] for h in self.history if h["round"] == self.round
                                     and Config.from_dict(h["config"]).key() == cfg.key())
            self._window = []
            self._log(f"locked in: {cfg.describe()} (median {self.locked_time_s * 1e3:.1f} ms)")
            if self.profile_out is not None and self.rank == self._src:
                self.profile_path = str(save_profile(self.to_profile(), self.profile_out))
                self._log(f"wrote {self.profile_path}")

    def _top_configs(self, n: int) -> list[Config]:
        """Best distinct configurations of the last round (the locked-in one first)."""
        rows = sorted((h for h in self.history if h["round"] == self.round), key=lambda h: h["median_s"])
        out: list[Config] = [self.locked] if self.locked else []
        for h in rows:
            cfg = Config.from_dict(h["config"])
            if all(cfg.key() != c.key() for c in out):
                out.append(cfg)
        return out[:max(1, n)]

    # -------------------------------------------------------------- collectives

    def _bcast(self, msg: Any) -> Any:
        return self._channel.bcast(msg)

    def _max_over_ranks(self, value: float) -> float:
        return self._channel.max([value])[0]

    # -------------------------------------------------------------- profile

    def _default_cluster(self) -> ClusterSpec:
        p = self._initial_profile
        if p is not None and p.cluster.world_size == self.world_size:
            return p.cluster
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local < 1 or self.world_size % local:
            local = 1
        return ClusterSpec(nodes=self.world_size // local, gpus_per_node=local, name="live",
                           device=str(next(self.module.parameters()).device))

    def to_profile(self) -> Profile:
        """The locked-in configuration as a ``commtune-profile/1`` Profile."""
        if self.locked is None:
            raise CommtuneError("nothing locked in yet")
        mp = module_profile(self.module, self.model_info.get("name"))
        model = {"name": mp.name, "fingerprint": mp.fingerprint(), "num_tensors": mp.num_tensors,
                 "num_params": mp.num_params, "batch_size": self.model_info.get("batch_size"),
                 "precision": self.model_info.get("precision", "fp32"),
                 "input_size": self.model_info.get("input_size")}
        rows = [h for h in self.history if h["round"] == self.round]
        baselines = {}
        ddp_key = Config(DDP_DEFAULT).key()
        for h in rows:
            if Config.from_dict(h["config"]).key() == ddp_key:
                baselines["ddp_default"] = {"step_time_s": h["median_s"]}
        return Profile(
            model=model, cluster=self.cluster, knobs=self.locked.knobs,
            predicted={"step_time_s": self.locked_time_s},
            baselines=baselines, lower_bound_s=None,
            provenance=provenance(
                backend="live-ddp", sampler=self.sampler_name,
                trials=len(rows), seed=self.seed, study=f"{self.study_name_base or 'commtune-live'}-round{self.round}",
                storage=str(self.storage) if self.storage is not None else None,
                objective=f"median step time over {self.steps_per_trial} steps after {self.warmup_steps} "
                          f"warm-up, slowest rank (measured, not predicted)",
                stream_mode=self.locked.stream_mode, round=self.round, world_size=self.world_size,
                measurements=[{"knobs": h["config"]["knobs"], "stream_mode": h["config"]["stream_mode"],
                               "describe": h["describe"], "median_s": h["median_s"]} for h in rows],
            ),
        )

    def _log(self, text: str) -> None:
        if self.verbose and self.rank == self._src:
            print(f"[commtune] {text}", file=sys.stderr, flush=True)
