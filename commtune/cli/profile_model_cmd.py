"""``commtune profile-model``: record a torch model's gradient order and layer times."""
from __future__ import annotations

import argparse

from commtune.cli.common import ranged
from commtune.errors import CommtuneError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile-model", help="record a torch model into a model profile file",
        description="Build a torch.nn.Module from MODULE:FACTORY, run forward+backward on "
                    "synthetic input and write its gradient-ready order and per-layer times.")
    p.add_argument("factory", metavar="MODULE:FACTORY",
                   help="e.g. mypkg.models:make_model or path/to/file.py:make_model "
                        "(called with no arguments)")
    p.add_argument("-o", "--output", required=True, help="profile file to write (.yaml/.yml/.json)")
    p.add_argument("--batch-size", type=ranged("batch_size", "--batch-size"), default=32, help="batch size (default 32)")
    p.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                   help="per-sample float input shape (default 3,224,224)")
    p.add_argument("--seq-len", type=ranged("input_size", "--seq-len"), help="feed token ids of this length instead")
    p.add_argument("--vocab", type=int, help="token id range (default: smallest nn.Embedding)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    p.add_argument("--steps", type=ranged("steps", "--steps"), default=5, help="timed steps (median; default 5)")
    p.add_argument("--warmup", type=ranged("warmup", "--warmup"), default=2, help="untimed steps first (default 2)")
    p.add_argument("--name", help="profile name (default: the module's class name)")
    p.add_argument("--ddp-costs", action="store_true",
                   help="also time the model in single-rank DDP at three bucket caps (one tensor per bucket, a quarter, all) and print the "
                        "fitted per-bucket and per-tensor costs (cluster-file keys bucket_cost, tensor_hook)")
    p.set_defaults(func=run)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 3,224,224, "
                                         f"got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got {text!r}")
    return dims


def run(args: argparse.Namespace) -> int:
    from commtune.models import profile_file
    from commtune.models.record import RecordOptions, build_module, record_module

    if not profile_file.is_profile_path(args.output):
        raise CommtuneError(f"-o {args.output}: use a .yaml, .yml or .json file name")
    from commtune.io import check_writable

    check_writable(args.output, "model profile")
    options = RecordOptions(batch_size=args.batch_size, input_shape=args.input_shape,
                            seq_len=args.seq_len, vocab=args.vocab, device=args.device,
                            steps=args.steps, warmup=args.warmup, name=args.name)
    options.check()
    module = build_module(args.factory)
    profile = record_module(module, options)
    if args.ddp_costs:
        from commtune.probe.ddp_costs import measure_recorded

        profile.meta["ddp_costs"] = measure_recorded(module, profile, options)
    profile_file.save(profile, args.output)
    fwd = sum(layer.fwd_time_s or 0.0 for layer in profile.layers)
    bwd = sum(layer.bwd_time_s or 0.0 for layer in profile.layers)
    print(f"wrote {args.output}: {profile.name}, {len(profile.layers)} layers, "
          f"{profile.num_tensors} tensors, {profile.num_params:,} params; "
          f"forward {fwd * 1e3:.2f} ms, backward {bwd * 1e3:.2f} ms, "
          f"optimizer {profile.meta['optimizer_s'] * 1e3:.2f} ms "
          f"(batch {options.batch_size} on {profile.measured_device})")
    costs = profile.meta.get("ddp_costs")
    if costs:
        steps = ", ".join(f"{k} buckets {t * 1e3:.2f} ms" for k, t in zip(costs["buckets"], costs["step_s"]))
        print(f"DDP on one rank: no DDP {costs['no_ddp_s'] * 1e3:.2f} ms; {steps} -> "
              f"bucket_cost: {costs['bucket_cost_s'] * 1e6:.1f}us, tensor_hook: {costs['tensor_hook_s'] * 1e6:.2f}us")
    return 0
