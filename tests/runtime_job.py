"""One rank of the runtime tests: ``python tests/runtime_job.py SCENARIO OUT_DIR``.

Reads RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from the environment (the test
starts the ranks as subprocesses on localhost, or inside emulated hosts), runs
the scenario and writes ``OUT_DIR/rank<R>.json``. Scenarios:

* ``checks``: gradients under the multi-stream hook vs plain DDP (K = 1, 2, 4,
  split and round-robin, fp16), bucket sizes vs the profile, mismatched
  profile, world-size mismatch, a profile DDP cannot fully apply, and a short
  AutoTuner run (rebuilds, lock-in, profile written, optimizer still valid);
* ``tune``: the AutoTuner over K in {1, 2, 4} with a model of a few MB
  (the emulated-cluster test: a per-stream cap makes K = 4 the best).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from commtune.cluster import ClusterSpec  # noqa: E402
from commtune.errors import CommtuneError  # noqa: E402
from commtune.knobs import Knobs  # noqa: E402
from commtune.profiles import Profile, provenance  # noqa: E402
from commtune.runtime import AutoTuner, CommtuneWarning, build_ddp, module_profile, plan_for, wrap  # noqa: E402

from commtune.units import KiB  # noqa: E402


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def equal_net(n: int = 20, width: int = 128) -> torch.nn.Module:
    """``n`` bias-free square layers: every gradient is ``width*width*4`` bytes (64 KiB)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(n)])


def profile_for(module: torch.nn.Module, knobs: Knobs, world: int, name: str | None = None) -> Profile:
    mp = module_profile(module, name)
    return Profile(model={"name": mp.name, "fingerprint": mp.fingerprint(), "num_tensors": mp.num_tensors,
                          "num_params": mp.num_params},
                   cluster=ClusterSpec(nodes=world, gpus_per_node=1, name="test"), knobs=knobs,
                   predicted={"step_time_s": 0.1}, provenance=provenance(backend="test"))


def grads_after(plan, x, steps: int = 3, net=small_net):
    m = net()
    d = build_ddp(m, plan)
    for _ in range(steps):
        m.zero_grad()
        d(x).pow(2).sum().backward()
    return [p.grad.clone() for p in m.parameters()], d


def checks(rank: int, world: int, out_dir: Path) -> dict:
    res: dict = {}
    torch.manual_seed(100 + rank)
    x = torch.randn(16, 32)
    ref, _ = grads_after(plan_for(Knobs(fusion_policy="static")), x)
    # Multi-stream gradients equal plain DDP's. Small buckets so there are several.
    res["grads"] = {}
    for k in (1, 2, 4):
        for mode in ("split", "round_robin"):
            for wire in ("fp32", "fp16"):
                if wire == "fp16" and k == 2:
                    continue
                knobs = Knobs(fusion_policy="static", num_streams=k, fusion_threshold_bytes=64 * KiB,
                              first_bucket_bytes=16 * KiB, wire_precision=wire)
                plan = plan_for(knobs, mode)
                g, d = grads_after(plan, x)
                tol = dict(rtol=1e-5, atol=1e-6) if wire == "fp32" else dict(rtol=2e-2, atol=1e-3)
                res["grads"][f"{k}-{mode}-{wire}"] = {
                    "close": all(torch.allclose(a, b, **tol) for a, b in zip(ref, g)),
                    "max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(ref, g)),
                    "hook": d.commtune_hook_state is not None,
                    "streams": d.commtune_hook_state.num_streams if d.commtune_hook_state else 1,
                }
    # Bucket sizes seen by the hook honour the profile's caps.
    first, cap = 128 * KiB, 512 * KiB
    knobs = Knobs(fusion_policy="static", num_streams=2, fusion_threshold_bytes=cap, first_bucket_bytes=first)
    net = equal_net()
    prof = profile_for(net, knobs, world)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matching profile gives no warning
        d = wrap(net, prof, hook_options={"log_buckets": True})
    xe = torch.randn(4, 128)
    for _ in range(3):
        net.zero_grad()
        d(xe).sum().backward()
    log = d.commtune_hook_state.bucket_log
    nb = None
    for i, (idx, _) in enumerate(log):  # the last step's buckets: the last run of indices from 0
        if idx == 0:
            nb = i
    res["buckets"] = {"last_step": sorted(log[nb:]), "tensor_bytes": 128 * 128 * 4, "first": first, "cap": cap,
                      "grad_bytes": sum(p.numel() * 4 for p in net.parameters())}
    # A profile for another model is refused, naming both.
    other = profile_for(small_net(), knobs, world, name="resnet-ish")
    try:
        wrap(equal_net(), other)
        res["mismatch"] = None
    except CommtuneError as exc:
        res["mismatch"] = str(exc)
    # World size mismatch: warning, strict -> error.
    wrong = dataclasses.replace(prof, cluster=ClusterSpec(nodes=world * 4, gpus_per_node=2, name="big"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrap(equal_net(), wrong)
    res["world_warning"] = [str(w.message) for w in caught if issubclass(w.category, CommtuneWarning)]
    try:
        wrap(equal_net(), wrong, strict=True)
        res["world_strict"] = None
    except CommtuneError as exc:
        res["world_strict"] = str(exc)
    # Dynamic fusion profile: bucket cap applied, the rest listed.
    dyn = dataclasses.replace(prof, knobs=Knobs(fusion_policy="dynamic", fusion_threshold_bytes=cap, cycle_time_ms=5.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = wrap(equal_net(), dyn)
    res["dynamic_warning"] = [str(w.message) for w in caught if issubclass(w.category, CommtuneWarning)]
    res["dynamic_cap"] = d.commtune_plan.bucket_cap_bytes
    # AutoTuner on localhost: runs, rebuilds, locks in, writes a profile; optimizer stays valid.
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    before = [p.detach().clone() for p in net.parameters()]
    space = {"fusion_threshold_bytes": ["16KiB", "25MiB"], "num_streams": [1, 2], "stream_mode": "split"}
    tuner = AutoTuner(net, space, trials=3, steps_per_trial=2, warmup_steps=1, drift=None,
                      initial=[Knobs(fusion_policy="static", num_streams=2, fusion_threshold_bytes=16 * KiB)],
                      profile_out=out_dir / "tuned.json", verbose=False)
    wrappers = set()
    for _ in range(3 * 3 + 2):
        with tuner.timed_step() as model:
            wrappers.add(id(model))
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    res["tuner"] = {
        "locked": tuner.locked.to_dict() if tuner.locked else None,
        "history": [(h["describe"], h["median_s"]) for h in tuner.history],
        "wrappers": len(wrappers), "first_trial_streams": tuner.history[0]["config"]["knobs"]["num_streams"],
        "profile_path": tuner.profile_path, "tuning": tuner.tuning,
        "params_changed": any(not torch.equal(a, b) for a, b in zip(before, net.parameters())),
        "param_sum": float(sum(p.detach().double().sum() for p in net.parameters())),
    }
    # Drift: locked-in steps suddenly much slower -> a new short round, a new lock-in, the profile rewritten.
    tuner = AutoTuner(net, {"num_streams": [1, 2]}, trials=2, steps_per_trial=1, warmup_steps=0, drift=0.5,
                      drift_window=2, retune_trials=2, profile_out=out_dir / "drift.json", verbose=False)
    fake = iter([0.01, 0.01] + [0.01] * 2 + [0.05] * 2 + [0.02] * 2 + [0.02] * 4)
    rounds = []
    for dt in fake:
        model = tuner.model
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        tuner.step(dt)
        rounds.append((tuner.round, tuner.tuning))
    res["drift"] = {"rounds": rounds, "locked_time_s": tuner.locked_time_s, "history": len(tuner.history)}
    return res


def tune(rank: int, world: int, out_dir: Path) -> dict:
    # 8 tensors of 512 KiB (4 MiB of gradients) in one bucket; no compute.
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(362, 362, bias=False) for _ in range(8)])
    x = torch.randn(4, 362)
    space = {"num_streams": [1, 2, 4], "stream_mode": "split", "fusion_threshold_bytes": "25MiB"}
    tuner = AutoTuner(net, space, trials=3, steps_per_trial=2, warmup_steps=1, drift=None,
                      profile_out=out_dir / "tuned.json", verbose=rank == 0)
    while tuner.tuning:
        with tuner.timed_step() as model:
            net.zero_grad()
            model(x).sum().backward()
    return {"locked_streams": tuner.locked.knobs.num_streams,
            "history": [(h["config"]["knobs"]["num_streams"], h["median_s"]) for h in tuner.history],
            "profile_path": tuner.profile_path}


def main() -> int:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        res = {"checks": checks, "tune": tune}[scenario](rank, world, out_dir)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(res))
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip process-group teardown (destroy_process_group can abort under gloo)


if __name__ == "__main__":
    sys.exit(main())
