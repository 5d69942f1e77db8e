"""A real DDP training loop, with DDP's defaults, a tuned profile, or the live AutoTuner.

Run under torchrun (or any launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT,
e.g. ``commtune.emulation.run_on_hosts``)::

    torchrun --nproc-per-node 4 experiments/train_ddp.py --model resnet50 --scale 0.25
    torchrun --nproc-per-node 4 experiments/train_ddp.py --model resnet50 --scale 0.25 --profile tuned.json
    torchrun --nproc-per-node 4 experiments/train_ddp.py --model resnet50 --scale 0.25 --tune --profile-out t.json

Model: a synthetic module mirroring a zoo model's parameter tensors (``--scale``
shrinks them) with emulated compute (forward/backward sleep ``--forward``/
``--backward`` seconds in total, spread over layers as the probe does), or a
model profile file (``--model file.yaml``, e.g. written by ``--save-model``), or
``--model cnn``: a real small CNN on random images. Synthetic data, SGD.
Rank 0 prints step times (median, p90) and with ``--json`` writes them.

With ``--tune`` the AutoTuner stays in the loop after it locks a configuration in:
every step, tuned or timed, runs under ``tuner.timed_step()`` on the tuner's current
model, so a step time that drifts past ``(1 + --drift)`` x the locked-in time starts a
new tuning round (:class:`commtune.runtime.AutoTuner`) -- the loop to copy into a real job.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

from commtune.stats import quantile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50", help="zoo name, model profile file, or 'cnn'")
    ap.add_argument("--scale", type=float, default=0.25, help="tensor size factor for zoo models (0, 1]")
    ap.add_argument("--forward", type=float, default=0.1, help="emulated forward time per step, s")
    ap.add_argument("--backward", type=float, default=0.2, help="emulated backward time per step, s")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    ap.add_argument("--profile", help="a commtune profile to apply (default: DDP's defaults)")
    ap.add_argument("--stream-mode", choices=["split", "round_robin"], default=None)
    ap.add_argument("--strict", action="store_true", help="world size mismatch is an error")
    ap.add_argument("--tune", action="store_true", help="tune online with the AutoTuner first")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--drift", type=float, default=0.2,
                    help="with --tune: re-tune when the locked-in step time grows by this fraction (0: never)")
    ap.add_argument("--profile-out", help="with --tune: where to write the tuned profile")
    ap.add_argument("--save-model", help="write the synthetic model's profile (for commtune search) and exit")
    ap.add_argument("--json", help="rank 0 writes step times here")
    ap.add_argument("--label", default="")
    return ap.parse_args(argv)


def model_profile(args):
    from commtune.models import load_model
    from commtune.runtime.synthetic import synthetic_profile

    m = load_model(args.model)
    if m.has_measured_times and m.measured_batch_size == 1:
        return m  # already a synthetic profile (written by --save-model)
    return synthetic_profile(m, scale=args.scale, forward_s=args.forward, backward_s=args.backward)


def build(args):
    import torch

    if args.model == "cnn":
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(64 * 8 * 8, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        return net, (lambda: torch.randn(args.batch, 3, 32, 32)), "cnn"
    from commtune.runtime.synthetic import SyntheticModel

    prof = model_profile(args)
    return SyntheticModel(prof), (lambda: torch.randn(args.batch, 16)), prof.name


def timed_steps(train_step, n: int, *, model=None, tuner=None) -> tuple[list[float], object]:
    """Run ``n`` training steps and time each (the slowest rank's, an all-reduce MAX).

    With ``tuner`` every step runs under ``tuner.timed_step()`` on the tuner's current
    model, also after lock-in: the tuner keeps watching the step time and re-tunes on
    drift, and a wrapper it rebuilt is the one the next step uses. Without, ``model``
    runs every step. Returns the step times and the model of the last step.
    """
    import torch
    import torch.distributed as dist

    times = []
    for _ in range(n):
        dist.barrier()
        t0 = time.perf_counter()
        if tuner is None:
            train_step(model)
        else:
            with tuner.timed_step() as model:
                train_step(model)
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        times.append(float(dt.item()))
    return times, model


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.save_model:
        from commtune.models import save_profile

        save_profile(model_profile(args), args.save_model)
        print(f"wrote {args.save_model}")
        return 0
    import torch
    import torch.distributed as dist

    import commtune.runtime as rt
    from commtune.errors import CommtuneError

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    module, batch, name = build(args)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)

    def train_step(model):
        x = batch()
        opt.zero_grad(set_to_none=True)
        model(x).float().pow(2).mean().backward()
        opt.step()

    tuner, model = None, None
    try:
        if args.tune:
            initial = [args.profile] if args.profile else []
            tuner = rt.AutoTuner(module, trials=args.trials, initial=initial, profile_out=args.profile_out,
                                 drift=args.drift or None,
                                 model_info={"name": name, "batch_size": args.batch, "precision": "fp32"})
            while tuner.tuning:
                with tuner.timed_step() as model:
                    train_step(model)
        elif args.profile:
            model = rt.wrap(module, args.profile, stream_mode=args.stream_mode, strict=args.strict)
        else:
            model = torch.nn.parallel.DistributedDataParallel(module)
    except CommtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        os._exit(2)
    times, model = timed_steps(train_step, args.warmup + args.steps, model=model, tuner=tuner)
    times = times[args.warmup:]
    if rank == 0:
        plan = getattr(model, "commtune_plan", None)
        res = {"label": args.label, "model": name, "world_size": world,
               "config": plan.describe() if plan else "DDP defaults (25 MiB buckets, 1 stream, fp32)",
               "median_s": statistics.median(times), "p90_s": quantile(times, 0.9), "times_s": times}
        if tuner is not None:
            res["tuning"] = [{"config": h["describe"], "median_s": h["median_s"], "round": h["round"]}
                             for h in tuner.history]
            res["tuning_rounds"] = tuner.round  # > 1: the step time drifted after lock-in and it re-tuned
        print(f"{args.label or name}: {res['config']}: median {res['median_s'] * 1e3:.1f} ms, "
              f"p90 {res['p90_s'] * 1e3:.1f} ms over {len(times)} steps ({world} ranks)", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip process-group teardown (destroy_process_group can abort under gloo)


if __name__ == "__main__":
    sys.exit(main())
