"""experiments/train_ddp.py, the example users copy: the AutoTuner stays in its loop after lock-in."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import load_experiment

ROOT = Path(__file__).resolve().parents[1]


class FakeTuner:
    """Counts the steps it times and swaps its model after the second (as a re-tune rebuilds DDP)."""

    def __init__(self):
        self.models = ["ddp-1", "ddp-2"]
        self.timed = 0

    @contextlib.contextmanager
    def timed_step(self):
        yield self.models[0]
        self.timed += 1
        if self.timed == 2:
            self.models.pop(0)


def test_timed_steps_go_through_the_tuner_and_follow_its_model(monkeypatch):
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    train = load_experiment("train_ddp")
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: None)  # one process, no group: the sync is a no-op
    monkeypatch.setattr(dist, "all_reduce", lambda *a, **k: None)
    used: list[str] = []
    tuner = FakeTuner()
    times, last = train.timed_steps(used.append, 4, model="dropped", tuner=tuner)
    assert tuner.timed == 4 and used == ["ddp-1", "ddp-1", "ddp-2", "ddp-2"] and last == "ddp-2"
    assert len(times) == 4 and all(t >= 0 for t in times)
    used.clear()
    times, last = train.timed_steps(used.append, 2, model="plain")  # no tuner: the given model every step
    assert used == ["plain", "plain"] and last == "plain"


JOB = textwrap.dedent("""
    import json, os, sys, time
    import torch, torch.distributed as dist
    sys.path.insert(0, {root!r})
    from tests.conftest import load_experiment
    import commtune.runtime as rt

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29417")
    dist.init_process_group("gloo", rank=0, world_size=1)
    train = load_experiment("train_ddp")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Linear(64, 4))
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    delay = [0.0]

    def step(model):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(4, 16)).pow(2).mean().backward()
        opt.step()
        time.sleep(delay[0])

    tuner = rt.AutoTuner(module, trials=2, steps_per_trial=1, warmup_steps=0, drift=0.5, drift_window=2,
                         verbose=False)
    while tuner.tuning:
        with tuner.timed_step() as model:
            step(model)
    locked_round = tuner.round
    delay[0] = 0.2  # the network got slower: every step now takes far more than 1.5 x the locked-in time
    train.timed_steps(step, 2, model=model, tuner=tuner)
    print(json.dumps({{"locked_round": locked_round, "round": tuner.round, "tuning": tuner.tuning}}))
    sys.stdout.flush()
    os._exit(0)
""")


@pytest.mark.slow
def test_drift_after_lock_in_re_tunes_in_the_example_loop():
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", JOB.format(root=str(ROOT))], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"locked_round": 1, "round": 2, "tuning": True}  # the drift check ran and a new round began
