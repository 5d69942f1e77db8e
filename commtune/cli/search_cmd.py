"""`commtune search`: tune the communication knobs for a model and cluster."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from commtune.cli.common import add_scenario_args, positive_int, ranged
from commtune.cli.profile_model_cmd import _shape
from commtune.errors import CommtuneError
from commtune.search import BACKENDS, PRUNERS, SAMPLERS
from commtune.search.liveness import GRACE_S, HEARTBEAT_S
from commtune.sharding_checks import SHARDING_CHOICES, check_sharding_choice
from commtune.tuning import DEFAULT_CONFIRM

DEFAULT_TRIALS = 50
DEFAULT_BW = "32gbit"


def _seconds(text: str) -> float:
    from commtune.limits import RANGES
    from commtune.units import parse_duration

    try:
        return RANGES["timeout"].check(parse_duration(text, what="--timeout"), "--timeout", repr(text))
    except CommtuneError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--timeout ")) from None


#: Live-measurement flags and their defaults (None on the parser, so a live flag given to a
#: simulator search is an error instead of being ignored).
_LIVE_DEFAULTS = {"live_scale": 0.25, "live_compute": "emulated", "live_steps": 8, "live_warmup": 1,
                  "live_timeout": 300.0, "prefix": "ct", "live_engine": "gloo"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the best communication knobs (simulator + Optuna/Ray)",
                       description="Search the communication knobs for a model and cluster and write a profile. "
                                   "Defaults: 16 nodes x 8 GPUs, --bw 32gbit (with that preset's per-stream cap), "
                                   f"space 'default', sampler 'auto', {DEFAULT_TRIALS} trials, SQLite study "
                                   "under --workdir (re-running resumes).")
    add_scenario_args(p, model_required=False)  # --model, or --model-factory for a live search
    g = p.add_argument_group("search")
    g.add_argument("--space", default=None, metavar="NAME_OR_FILE",
                   help="search space: default, ddp, horovod, fsdp, hsdp, zero, or a YAML file (default: the "
                        "space(s) of --sharding)")
    g.add_argument("--sharding", default="auto", metavar="|".join(SHARDING_CHOICES),
                   help="auto (default): all-reduce DP (space default) while the model fits the GPU unsharded, "
                        "else the best of ZeRO-2/3 (zero), FSDP (fsdp) and HSDP (hsdp) under the memory limit; "
                        "none, grad, full or hybrid pins it")
    g.add_argument("--sampler", default="auto", help=f"{'|'.join(SAMPLERS)} (default auto: TPE warm-started from the "
                   "baselines and a batch-simulator screening; grid: exhaustive over the discretised space)")
    g.add_argument("--backend", default="optuna", help=f"{'|'.join(BACKENDS)} (default optuna; horovod: a replica of "
                   "Horovod's autotuner on its two knobs, --trials evaluations, nothing stored)")
    g.add_argument("--trials", type=ranged("trials", "--trials"), default=DEFAULT_TRIALS,
                   help=f"total complete trials the study should hold (default {DEFAULT_TRIALS}); finished trials count")
    g.add_argument("--timeout", type=_seconds, help="stop after this long (e.g. 30s, 250ms, 600 = seconds)")
    g.add_argument("--seed", type=ranged("seed", "--seed"), default=0, help="sampler seed (default 0; same seed, same result)")
    g.add_argument("--screen", type=ranged("screen", "--screen"), default=4096,
                   help="configurations the auto engine screens with the batch simulator (default 4096, 0 = off)")
    g.add_argument("--grid-points", type=ranged("grid_points", "--grid-points"), help="grid: points per numeric range (default: the space's)")
    g.add_argument("--objective", default="simulator",
                   help="simulator (default), live (measured DDP or FSDP2 steps of the model's synthetic mirror, with pruning), "
                        "or multi (simulator search, then the top --confirm K measured live; the measured best wins)")
    g.add_argument("--confirm", type=ranged("steps", "--confirm"), metavar="K",
                   help=f"multi-fidelity: measure the simulator's top K distinct configurations live (default "
                        f"{DEFAULT_CONFIRM} with --objective multi)")
    g.add_argument("--study", help="study name (default: derived from model, cluster, space and workload)")
    g.add_argument("--storage", help="Optuna storage: sqlite:///file.db, journal:///path/file.log (or a .log path), "
                   "any RDB URL, or 'memory' (default: sqlite under --workdir)")
    g.add_argument("--workdir", default="profiles", help="folder for the default study DB and profiles (default profiles)")
    g.add_argument("--heartbeat", type=positive_int, default=HEARTBEAT_S, metavar="S",
                   help=f"RDB storages: seconds between a worker's heartbeats (default {HEARTBEAT_S})")
    g.add_argument("--grace", type=positive_int, default=GRACE_S, metavar="S",
                   help=f"RDB storages: a trial whose worker sent no heartbeat for S seconds is failed and "
                        f"retried (default {GRACE_S})")
    g.add_argument("--concurrency", type=ranged("concurrency", "--concurrency"), help="ray: concurrent trials (default 2; live: 1)")
    g.add_argument("--ray-address", help="ray: join this Ray cluster (default: start a local one)")
    g.add_argument("--ray-temp-dir", help="ray: temp dir of the local Ray instance (keep it short)")
    lv = p.add_argument_group("live measurement (--objective live|multi)")
    lv.add_argument("--ranks", type=ranged("ranks", "--ranks"), help="live ranks: N local processes on 127.0.0.1 (default 2 unless "
                    "--cluster emulated: one rank per emulated host)")
    lv.add_argument("--prefix", help="--cluster emulated: namespace prefix of the cluster (default ct)")
    lv.add_argument("--live-scale", type=ranged("scale", "--live-scale"),
                    help="scale on the model's tensor sizes for the synthetic model (default 0.25)")
    lv.add_argument("--live-compute", choices=("emulated", "real"),
                    help="compute of the synthetic model: emulated (sleep to the scenario's per-layer timeline) "
                         "or real (CPU work) (default emulated)")
    lv.add_argument("--live-forward-ms", type=ranged("compute_ms", "--live-forward-ms"), help="emulated forward time (default: the scenario's)")
    lv.add_argument("--live-backward-ms", type=ranged("compute_ms", "--live-backward-ms"), help="emulated backward time (default: the scenario's)")
    lv.add_argument("--live-steps", type=ranged("steps", "--live-steps"), help="timed steps per trial (default 8)")
    lv.add_argument("--live-warmup", type=ranged("steps", "--live-warmup"), help="untimed warm-up steps per trial (default 1)")
    lv.add_argument("--model-factory", metavar="MODULE:FACTORY",
                    help="measure your own model (as `commtune profile-model`: built by the factory, synthetic inputs "
                         "of --batch-size x --input-shape or --seq-len) instead of the model's synthetic mirror; "
                         "the profile carries its fingerprint, so commtune.runtime.wrap accepts it")
    lv.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="--model-factory: per-sample input shape "
                    "(default 3,224,224)")
    lv.add_argument("--seq-len", type=ranged("input_size", "--seq-len"),
                    help="--model-factory: feed token ids of this length instead")
    lv.add_argument("--live-engine", choices=("gloo", "nccl"),
                    help="collectives of the live ranks: gloo (CPU, default) or nccl (one GPU per rank)")
    lv.add_argument("--live-timeout", type=_seconds,
                    help="seconds before a hung live run is stopped, naming the rank (default 300)")
    lv.add_argument("--pruner", default=None, help=f"{'|'.join(PRUNERS)}: stop bad live trials early (default median; "
                    "with --backend ray: ASHA)")
    g.add_argument("-o", "--output", help="profile path (default <workdir>/<model>-<bw>.json); with several "
                   "bandwidths a folder or a path containing {bw}")
    g.add_argument("--no-profile", action="store_true", help="do not write a profile")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> None:
    from commtune.errors import did_you_mean
    from commtune.evaluators.base import evaluator_names

    objectives = evaluator_names()

    if args.sampler not in SAMPLERS:
        raise CommtuneError(f"unknown sampler {args.sampler!r}{did_you_mean(args.sampler, SAMPLERS)}; "
                            f"samplers: {', '.join(SAMPLERS)}")
    if args.backend not in BACKENDS:
        raise CommtuneError(f"unknown backend {args.backend!r}{did_you_mean(args.backend, BACKENDS)}; "
                            f"backends: {', '.join(BACKENDS)}")
    if args.trials < 1:
        raise CommtuneError(f"--trials must be at least 1, got {args.trials}")
    if args.screen < 0:
        raise CommtuneError(f"--screen must be >= 0, got {args.screen}")
    if args.grace <= args.heartbeat:
        raise CommtuneError(f"--grace ({args.grace} s) must exceed --heartbeat ({args.heartbeat} s), or live "
                            "workers' trials would be failed between two heartbeats")
    if args.objective not in (*objectives, "multi"):
        names = [*objectives, "multi"]
        raise CommtuneError(f"unknown objective {args.objective!r}{did_you_mean(args.objective, names)}; "
                            f"objectives: {', '.join(names)}")
    if args.backend in ("ray", "horovod") and args.sampler == "grid":
        raise CommtuneError(f"--sampler grid runs on the batch simulator; use it without --backend {args.backend}")
    if args.grid_points is not None and args.sampler != "grid":
        raise CommtuneError(f"--grid-points {args.grid_points} sets the grid of --sampler grid; add it or drop --grid-points")
    if args.backend != "ray":
        given = [f for f, v in (("--concurrency", args.concurrency), ("--ray-address", args.ray_address),
                                ("--ray-temp-dir", args.ray_temp_dir)) if v is not None]
        if given:
            raise CommtuneError(f"{given[0]} is for --backend ray; add it or drop {given[0]}")
    if args.no_profile and args.output:
        raise CommtuneError(f"--no-profile and -o {args.output} contradict each other: give one of them")
    _validate_live(args)
    if args.model_factory:
        if args.model:
            raise CommtuneError("--model-factory measures your own model; drop --model")
        if args.objective != "live":
            raise CommtuneError("--model-factory measures your model live: it goes with --objective live")
        args.model = "resnet50"  # a placeholder: the search records the factory's model as the scenario's
    elif not args.model:
        raise CommtuneError("the following arguments are required: --model (or --model-factory with --objective live)")
    for flag, v in (("--input-shape", args.input_shape), ("--seq-len", args.seq_len)):
        if v is not None and not args.model_factory:
            raise CommtuneError(f"{flag} shapes the inputs of --model-factory; add it or drop {flag}")
    from commtune.extras import require, sampler_extra

    if args.backend == "ray":
        require("ray", "--backend ray")
    if sampler_extra(args.sampler):
        require(sampler_extra(args.sampler), f"--sampler {args.sampler}")
    if args.storage:
        from commtune.search.storage import normalise

        normalise(args.storage)


_LIVE_FLAGS = ("ranks", "live_forward_ms", "live_backward_ms", "pruner", "model_factory", *_LIVE_DEFAULTS)


def _validate_live(args: argparse.Namespace) -> None:
    """Flag combinations of live and multi-fidelity search (one-line errors)."""
    if args.objective == "multi":
        if args.confirm is None:
            args.confirm = DEFAULT_CONFIRM
    elif args.confirm is not None and args.objective != "simulator":
        raise CommtuneError(f"--confirm K confirms a simulator search live; it does not go with --objective {args.objective}")
    if args.confirm is not None and args.confirm < 1:
        raise CommtuneError(f"--confirm must be at least 1, got {args.confirm}")
    live = args.objective == "live" or args.confirm is not None
    args.live = live
    if not live:
        given = [f"--{n.replace('_', '-')}" for n in _LIVE_FLAGS if getattr(args, n) is not None]
        if args.cluster == "emulated":
            given.append("--cluster emulated")
        if given:
            raise CommtuneError(f"{given[0]} is for live measurement: add --objective live or multi (or --confirm K)")
        return
    for name, default in _LIVE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.pruner is not None and args.pruner not in PRUNERS:
        from commtune.errors import did_you_mean

        raise CommtuneError(f"unknown pruner {args.pruner!r}{did_you_mean(args.pruner, PRUNERS)}; pruners: {', '.join(PRUNERS)}")
    if args.pruner is not None and args.objective != "live":
        raise CommtuneError("--pruner stops live trials early; it goes with --objective live")
    if args.objective == "live" and args.sampler == "grid":
        raise CommtuneError("--sampler grid runs on the batch simulator; with --objective live use another sampler "
                            "(or --objective multi --sampler grid)")
    if args.bw and "," in args.bw:
        raise CommtuneError("live measurement runs on one cluster: give one --bw")
    if args.cluster == "emulated":
        if args.ranks is not None:
            raise CommtuneError("--cluster emulated runs one rank per emulated host; drop --ranks")
        clash = [f for f, v in (("--bw", args.bw), ("--nodes", args.nodes), ("--gpus-per-node", args.gpus_per_node),
                                ("--per-stream", args.per_stream), ("--latency", args.latency)) if v is not None]
        if clash:
            raise CommtuneError(f"--cluster emulated takes the cluster from the running emulated cluster; drop {clash[0]}")
    if args.objective == "live" and args.backend == "ray" and (args.concurrency or 1) > 1:
        raise CommtuneError("live trials share the cluster (concurrent ones would time each other): --concurrency must be 1")


def in_job(args: argparse.Namespace) -> bool:
    """A live search inside a job the user launched (torchrun): RANK/WORLD_SIZE set, no --ranks,
    no --cluster emulated. Rank 0 searches, every rank measures."""
    from commtune.probe.comm import env_has_rank

    return args.live and env_has_rank() and args.ranks is None and args.cluster != "emulated"


def _serve_job(args: argparse.Namespace, scenario, settings) -> int | None:
    """Under torchrun: join the job; ranks other than 0 serve the search's trials and return 0.
    Rank 0 returns None and runs the search (its trials run on every rank)."""
    settings.launch.init()
    if settings.launch.rank == 0:
        return None
    from commtune.runtime.worker_group import serve_in_job
    from commtune.evaluators.live import LiveEvaluator

    serve_in_job(LiveEvaluator(scenario.model, settings, scenario=scenario).task(), None, device=settings.launch.init())
    return 0


def _live_scenario(args: argparse.Namespace):
    """(scenario, live settings): the simulator side describes the cluster the ranks run on."""
    import dataclasses
    import os

    from commtune.cli.common import scenario_from_args
    from commtune.probe.launch import LaunchSpec
    from commtune.evaluators.live import LiveSettings, cluster_from_state

    if args.cluster == "emulated":
        from commtune.emulation import problems, status
        from commtune.models import load_model
        from commtune.scenario import Scenario

        if os.geteuid() != 0:
            raise CommtuneError("--cluster emulated launches ranks in network namespaces: needs root")
        state = status(args.prefix)
        if state is None:
            raise CommtuneError(f"no emulated cluster {args.prefix!r} is up; run `commtune cluster up` first")
        bad = problems(state)
        if bad:
            raise CommtuneError(f"emulated cluster {args.prefix!r} is broken ({bad[0]}); run `commtune cluster down` and up again")
        cluster = cluster_from_state(state, device=args.device)
        if args.intra:
            from commtune.cluster import make_cluster

            cluster = dataclasses.replace(cluster, intra_bw_Bps=make_cluster(intra=args.intra).intra_bw_Bps)
        scenario = Scenario(load_model(args.model, input_size=args.input_size), cluster, batch_size=args.batch_size or 64,
                            precision=args.precision)
        launch = LaunchSpec(state=state, timeout_s=args.live_timeout)
    elif in_job(args):
        from commtune.runtime.worker_group import JobLaunch

        launch = JobLaunch.from_env(args.live_timeout, args.live_engine)
        a = args
        if not args.cluster and args.nodes is None and args.gpus_per_node is None:
            a = argparse.Namespace(**{**vars(args), "nodes": launch.hosts, "gpus_per_node": launch.local_world_size})
        scenario = scenario_from_args(a)
    else:
        ranks = args.ranks or 2
        a = args
        if not args.cluster and args.nodes is None and args.gpus_per_node is None:
            a = argparse.Namespace(**{**vars(args), "nodes": ranks, "gpus_per_node": 1})
        scenario = scenario_from_args(a)
        launch = LaunchSpec(ranks=ranks, timeout_s=args.live_timeout, engine=args.live_engine)
    record = None
    if args.model_factory:
        from commtune.models.record import RecordOptions, profile_factory
        from commtune.scenario import Scenario

        record = {"batch_size": args.batch_size or 64, "input_shape": list(args.input_shape) if args.input_shape else None,
                  "seq_len": args.seq_len}
        if not (in_job(args) and launch.rank != 0):  # only the search records the model (its simulator side)
            model = profile_factory(args.model_factory, RecordOptions(
                batch_size=args.batch_size or 64, input_shape=args.input_shape, seq_len=args.seq_len, steps=2, warmup=1))
            scenario = Scenario(model, scenario.cluster, batch_size=args.batch_size or 64, precision=args.precision)
    settings = LiveSettings(
        model_factory=args.model_factory, record_options=record,
        launch=launch, scale=args.live_scale, compute=args.live_compute,
        forward_s=None if args.live_forward_ms is None else args.live_forward_ms / 1e3,
        backward_s=None if args.live_backward_ms is None else args.live_backward_ms / 1e3,
        steps=args.live_steps, warmup=args.live_warmup,
    )
    return scenario, settings


def _prepare_outputs(args: argparse.Namespace, paths: list[Path], storage: str) -> None:
    """Check every output before any work: storage usable, profile paths writable.
    Only the default --workdir folder is created (and said so); -o never creates folders."""
    from commtune.io import check_writable

    if args.storage:
        from commtune.search.storage import check_server, check_storage

        check_storage(storage)
        check_server(storage)  # a server that refuses is found before --workdir is created
    write = not args.no_profile
    if write and args.output:
        if len(paths) > 1 and "{bw}" not in args.output and not Path(args.output).is_dir():
            raise CommtuneError(f"-o {args.output!r}: with several bandwidths give an existing folder or a path "
                                f"containing {{bw}}")
        for path in paths:
            check_writable(path, "profile")
    if not args.storage or (write and not args.output):
        workdir = Path(args.workdir)
        if not workdir.is_dir():
            try:
                workdir.mkdir(parents=True)
            except OSError as exc:
                raise CommtuneError(f"cannot create --workdir {args.workdir!r}: {exc.strerror}") from None
            if not args.json and not args.quiet:
                print(f"created folder {str(workdir)!r} (--workdir) for the study and profiles", file=sys.stderr)
        for path in paths if write and not args.output else []:
            check_writable(path, "profile")


def _profile_path(args, model: str, bw: str, several: bool) -> Path:
    from commtune.profiles import default_profile_path

    if not args.output:
        return default_profile_path(model, bw, root=args.workdir)
    out = args.output
    if "{bw}" in out:
        return Path(out.replace("{bw}", bw))
    if several:
        return default_profile_path(model, bw, root=out)
    return Path(out)


class _Progress:
    """A rich progress bar on stderr (only on a TTY and without --quiet)."""

    def __init__(self, enabled: bool, label: str, header: list[str] | None = None):
        self.bar = None
        self.header = header or []  # printed once the search has started (a refused search prints only its error)
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(label, total=None, best="-")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, exc_type, *exc):
        if self.bar:
            self.bar.stop()
        if exc_type is None:
            self._print_header()

    def _print_header(self) -> None:
        for line in self.header:
            print(line, file=sys.stderr)
        self.header = []

    def __call__(self, done: int, total: int, best: float) -> None:
        self._print_header()
        if self.bar:
            from commtune.units import format_time

            self.bar.update(self.task, completed=done, total=total,
                            best=format_time(best) if best != float("inf") else "-")


def run(args: argparse.Namespace) -> int:
    from commtune.cli.common import scenario_from_args
    from commtune.search.space import load_space
    from commtune.tuning import default_storage, search_scenario, write_profile

    _validate(args)
    check_sharding_choice(args.sharding)
    if args.space is not None and args.sharding != "auto":
        raise CommtuneError(f"--space {args.space} and --sharding {args.sharding} both choose the space: give one")
    if args.live and args.sharding != "auto":
        raise CommtuneError("--sharding chooses simulated spaces; a live search takes --space")
    space = load_space(args.space or "default")
    if args.sampler == "grid":
        space.check_grid_size(points=args.grid_points)
    from commtune.units import split_list

    # --cluster without --bw keeps the cluster file's own link (its stem labels the run)
    bws = split_list(args.bw, "--bw") if args.bw else [Path(args.cluster).stem] if args.cluster else [DEFAULT_BW]
    several = len(bws) > 1
    if several and args.study:
        raise CommtuneError("--study names one study; with several bandwidths leave it out (one study per bandwidth)")
    storage = args.storage or default_storage(args.workdir)
    # Build every scenario first so a bad flag fails before any search or file.
    scenarios = []
    settings = None
    if args.live:
        from commtune.runtime.ddp_plan import check_space

        check_space(space, "--objective live" if args.objective == "live" else "live confirmation (--confirm)")
        scenario, settings = _live_scenario(args)
        if in_job(args):
            if args.objective != "live":
                raise CommtuneError("under torchrun only --objective live runs (every rank measures its trials)")
            rc = _serve_job(args, scenario, settings)
            if rc is not None:
                return rc
        bws = [args.bw or ("emulated" if args.cluster == "emulated" else "job" if in_job(args) else
                           (Path(args.cluster).stem if args.cluster else "local"))]
        scenarios.append((bws[0], scenario))
    for bw in bws if not args.live else []:
        a = argparse.Namespace(**{**vars(args), "bw": bw if args.bw or not args.cluster else None})
        scenarios.append((bw, scenario_from_args(a)))
    from commtune.sharding_checks import check_space_sharding, sharding_spaces

    plans = []  # per scenario: the (sharding, space) pairs to search, best one wins
    for _, scenario in scenarios:
        pairs = [(None, space)] if args.space is not None or args.live else sharding_spaces(scenario, args.sharding)
        for _, sp in pairs:
            check_space_sharding(sp, scenario.cluster)
            if args.sampler == "grid":
                sp.check_grid_size(points=args.grid_points)
        plans.append(pairs)
    paths = [_profile_path(args, scenarios[0][1].model.name, bw, several) for bw, _ in scenarios]
    _prepare_outputs(args, paths, storage)
    show_progress = not args.quiet and not args.json and sys.stderr.isatty()
    pruner = (args.pruner or "median") if args.objective == "live" else None
    reports = []
    t0 = time.monotonic()
    for (bw, scenario), path, pairs in zip(scenarios, paths, plans):
        choices = []
        t1 = time.monotonic()
        for sharding, space in pairs:
            header = []
            if not args.json and not args.quiet:
                header.append(f"searching {scenario.describe()}")
                header.append(f"  space {space.name} ({', '.join(space.param_names)}), backend {args.backend}, sampler "
                              f"{args.sampler}, {args.trials} trials, seed {args.seed}")
                if settings is not None:
                    what = "live trials" if args.objective == "live" else f"top {args.confirm} confirmed live"
                    header.append(f"  {what} on {settings.launch.describe()}: synthetic {scenario.model.name} "
                                  f"x{settings.scale:g} ({settings.compute} compute), {settings.warmup}+{settings.steps} steps"
                                  + (f", pruner {pruner}" if args.objective == "live" else ""))
            try:
                with _Progress(show_progress, f"{scenario.model.name} @ {bw}", header) as progress:
                    _, report = search_scenario(
                        scenario, space, backend=args.backend,
                        objective_name="live" if args.live else "simulator",
                        objective_options={"settings": settings} if settings is not None else None,
                        confirm=args.confirm or 0, sampler=args.sampler,
                        trials=args.trials, timeout_s=args.timeout, seed=args.seed, storage=storage,
                        study_name=args.study, screen=args.screen, grid_points=args.grid_points,
                        concurrency=args.concurrency or (1 if args.objective == "live" else 2),
                        ray_address=args.ray_address, ray_temp_dir=args.ray_temp_dir,
                        progress=progress, pruner=pruner, heartbeat_s=args.heartbeat, grace_s=args.grace,
                    )
            except KeyboardInterrupt:
                print("commtune: search interrupted; completed trials are saved in the study -- re-run the same "
                      "command to continue", file=sys.stderr)
                return 130
            choices.append((sharding, space, report))
        report = _pick(choices)
        report["bw"] = bw
        report["elapsed_s"] = round(time.monotonic() - t1, 3)
        if not args.no_profile:
            report["profile_path"] = str(write_profile(scenario, report, path))
        else:
            report["profile_path"] = None
        reports.append(report)
        if not args.json:
              _print_report(report)
    if args.json:
        if several:
            print(json.dumps({"runs": reports, "summary": _summary_rows(reports),
                              "elapsed_s": round(time.monotonic() - t0, 3)}, indent=2, default=str))
        else:
            print(json.dumps(reports[0], indent=2, default=str))
    elif several:
        _print_summary(reports)
    return _budget_short(args, reports)


def _pick(choices: list[tuple[str | None, object, dict]]) -> dict:
    """The report of the fastest feasible (sharding, space) search; the others listed under ``sharding_choices``."""
    import math

    feasible = [c for c in choices if math.isfinite(c[2]["predicted_step_time_s"])]
    if not feasible:
        names = ", ".join(sp.name for _, sp, _ in choices)
        raise CommtuneError(f"no configuration of space(s) {names} fits the device's memory; "
                            f"use --activation-checkpointing or a smaller --batch-size")
    best = min(feasible, key=lambda c: c[2]["predicted_step_time_s"])[2]
    if len(choices) > 1:
        best["sharding_choices"] = [
            {"sharding": sh, "space": sp.name, "step_time_s": r["predicted_step_time_s"],
             "peak_memory_bytes": r.get("peak_memory_bytes"), "study": r["study"], "trials": r["trials"]}
            for sh, sp, r in choices]
        best["trials_all"] = sum(r["trials"] for _, _, r in choices)
    return best


def _times(speedup: float | None) -> str:
    return "does not fit" if speedup is None else f"{speedup:.2f}x"


def _budget_short(args: argparse.Namespace, reports: list[dict]) -> int:
    """Exit status 1, with one line each, for studies that ended short of ``--trials`` without a timeout."""
    if args.timeout is not None or args.sampler == "grid":
        return 0
    short = [r for r in reports if r["trials"] + r.get("pruned", 0) < args.trials]  # pruned trials count too
    for r in short:
        print(f"commtune: study {r['study']} holds {r['trials']} of {args.trials} trials (workers lost or other "
              f"workers' trials still running); re-run the same command to complete it", file=sys.stderr)
    return 1 if short else 0


def _print_report(r: dict) -> None:
    from rich.table import Table

    from commtune.cli.common import stdout_console

    from commtune.knobs import KNOBS
    from commtune.units import format_time

    console = stdout_console()
    t = Table(title=f"{r['model']} @ {r['bw']} -- best of {r['trials']} trials ({r['backend']}/{r['sampler']})",
              show_header=True)
    t.add_column("")
    t.add_column("value")
    for name, value in r["best_active"].items():
        t.add_row(name, KNOBS[name].show(value))
    t.add_section()
    t.add_row("predicted step time", format_time(r["predicted_step_time_s"]))
    if r.get("measured"):
        m = r["measured"]
        t.add_row("measured step time", format_time(m["step_time_s"]))
        for name, b in m.get("baselines", {}).items():
            t.add_row(f"measured speedup vs {name.replace('_', ' ')}", f"{b['speedup']:.2f}x ({format_time(b['step_time_s'])})")
    t.add_row("scaling efficiency", f"{r['scaling_efficiency']:.1%}")
    for name, step in r["baselines"].items():
        t.add_row(f"speedup vs {name.replace('_', ' ')}",
                  f"{r['speedup'][name]:.2f}x ({format_time(step)})" if step is not None else "does not fit")
    if r.get("peak_memory_bytes") is not None:
        from commtune.units import format_size

        limit = r.get("device_memory_bytes")
        t.add_row("peak memory per GPU", format_size(r["peak_memory_bytes"])
                  + (f" of {format_size(limit)}" if limit else ""))
    if r["lower_bound_s"]:
        t.add_row("physical lower bound", format_time(r["lower_bound_s"]))
        t.add_row("distance to lower bound", f"+{r['gap_to_lower_bound']:.1%}")
    console.print(t)
    for c in r.get("sharding_choices", []):
        step = format_time(c["step_time_s"]) if c["step_time_s"] != float("inf") else "no configuration fits"
        print(f"  sharding {c['sharding']} (space {c['space']}, {c['trials']} trials): best {step}")
    if r.get("infeasible_evaluations"):
        print(f"  {r['infeasible_evaluations']} configurations evaluated exceed the GPU's memory (never returned)")
    from commtune.cli.notes import first_bucket_note
    from commtune.knobs import Knobs
    from commtune.runtime.ddp_plan import runtime_only

    best = Knobs.from_dict(r["best"])
    for line in [first_bucket_note(best), *runtime_only(best)]:
        if line:
            console.print(f"  note: {line}")
    for w in r.get("extrapolation", {}).get("warnings", []):
        console.print(f"[yellow]extrapolation warning:[/yellow] {w['message']}")
    if r.get("confirmed"):
        c = Table(title=f"top {len(r['confirmed'])} of the simulator, measured live (best measured first)")
        for col in ("sim rank", "knobs", "predicted", "measured", "error"):
            c.add_column(col)
        for row in r["confirmed"]:
            knobs = ", ".join(f"{k}={KNOBS[k].show(v)}" for k, v in row["active"].items()
                              if k not in ("fusion_policy", "hierarchical"))
            p, m = row["predicted_step_time_s"], row["measured_step_time_s"]
            c.add_row(str(row["sim_rank"]), knobs, format_time(p), format_time(m), f"{p / m - 1:+.1%}")
        console.print(c)
    extra = []
    if r.get("measured"):
        lv = r["measured"]["live"]
        extra.append(f"measured on {lv['launch']}: {r['measured']['model']} x{lv['scale']:g}, {lv['compute']} compute; "
                     f"{r['measured']['launches']} launches, {r['measured']['timed_steps']} timed steps")
    if r.get("pruned") is not None:
        extra.append(f"{r['pruned']} trials pruned ({r['timed_steps_pruned']} of {r['timed_steps']} timed steps in pruned trials)")
    if r.get("screened"):
        extra.append(f"{r['screened']} configurations screened with the batch simulator")
    if r.get("grid_size"):
        extra.append(f"grid of {r['grid_size']} configurations")
    if r.get("study"):
        earlier = r["trials"] - r["new_trials"]
        if earlier > 0:
            extra.append(f"resumed study {r['study']} in {r['storage']}: {earlier} trials from earlier runs, "
                         f"{r['new_trials']} new")
        else:
            extra.append(f"study {r['study']} in {r['storage']} ({r['new_trials']} new trials)")
    for line in extra:
        console.print(f"  {line}")
    if r.get("profile_path"):
        console.print(f"  profile written to {r['profile_path']}")


def _summary_rows(reports: list[dict]) -> list[dict]:
    return [{"bw": r["bw"], "predicted_step_time_s": r["predicted_step_time_s"], "best": r["best_active"],
             "speedup_ddp": r["speedup"].get("ddp_default"), "speedup_horovod": r["speedup"].get("horovod_default"),
             "gap_to_lower_bound": r["gap_to_lower_bound"], "profile_path": r["profile_path"]} for r in reports]


def _print_summary(reports: list[dict]) -> None:
    from rich.table import Table

    from commtune.cli.common import stdout_console

    from commtune.knobs import KNOBS
    from commtune.units import format_time

    names = [n for n in KNOBS if any(n in r["best_active"] for r in reports)]
    t = Table(title=f"how the best knobs move with bandwidth ({reports[0]['model']})")
    for col in ["bw", *names, "step", "vs DDP", "vs Horovod", "to bound"]:
        t.add_column(col)
    for r in reports:
        cells = [KNOBS[n].show(r["best_active"][n]) if n in r["best_active"] else "-" for n in names]
        t.add_row(r["bw"], *cells, format_time(r["predicted_step_time_s"]), _times(r["speedup"].get("ddp_default")),
                  _times(r["speedup"].get("horovod_default")),
                  f"+{r['gap_to_lower_bound']:.1%}" if r["gap_to_lower_bound"] is not None else "-")
    stdout_console().print(t)
