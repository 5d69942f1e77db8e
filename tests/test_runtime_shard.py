"""commtune.runtime.shard: FSDP2 on gloo ranks equals plain all-reduce data parallelism."""
from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from commtune.errors import CommtuneError  # noqa: E402
from commtune.knobs import FSDP2_DEFAULT, Knobs  # noqa: E402
from commtune.runtime.shard import block_modules, plan_shard  # noqa: E402


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Tiny(nn.Module):
    """A decoder-shaped toy: embedding, a ModuleList of blocks, a head."""

    def __init__(self, width: int = 8, depth: int = 3, vocab: int = 11):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def test_blocks_are_the_module_list_children():
    assert block_modules(Tiny()) == ["layers.0", "layers.1", "layers.2"]


def test_plan_units_per_block_and_root():
    plan = plan_shard(Tiny(), FSDP2_DEFAULT, world_size=2)
    assert plan.units[0] == ("embed", "head")  # FSDP2's root unit: everything outside a block
    assert plan.units[1:] == tuple(("layers.%d.norm" % i, "layers.%d.up" % i, "layers.%d.down" % i) for i in range(3))
    assert plan.reshard_after_forward is True and plan.mesh_shape == (2,)
    assert plan.root == 0  # the root call takes it (FSDP2 keeps the root gathered into the backward)
    assert plan_shard(Tiny(), Knobs(sharding="full", unit_bytes=1024), world_size=2).root is None  # greedy units


def test_plan_grad_hybrid_and_bad_values():
    assert plan_shard(Tiny(), Knobs(sharding="grad"), 2).reshard_after_forward is False
    assert plan_shard(Tiny(), Knobs(sharding="hybrid", shard_group_size=2), 4).mesh_shape == (2, 2)
    with pytest.raises(CommtuneError, match="shard_group_size 3 does not divide the world size 4"):
        plan_shard(Tiny(), Knobs(sharding="hybrid", shard_group_size=3), 4)
    with pytest.raises(CommtuneError, match="forward_prefetch 4: this model has 4 units"):
        plan_shard(Tiny(), Knobs(sharding="full", forward_prefetch=4), 2)
    with pytest.raises(CommtuneError, match="use commtune.runtime.wrap"):
        plan_shard(Tiny(), Knobs(), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference(steps: int, world: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plain data parallelism on one process: the mean of the ranks' losses, SGD."""
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        loss = sum(_loss(model, rank, step) for rank in range(world)) / world
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _loss(model, rank: int, step: int):
    g = torch.Generator().manual_seed(1000 * step + rank)
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    target = torch.randint(0, 11, (2, 5), generator=g)
    return nn.functional.cross_entropy(model(tokens).flatten(0, 1), target.flatten())


def _worker(rank: int, world: int, port: int, knobs: dict, steps: int, out: str) -> None:
    import torch.distributed as dist

    from commtune.runtime.shard import shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = shard(Tiny(), Knobs(**knobs))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(steps):
            loss = _loss(model, rank, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
        full = {k: v.full_tensor() for k, v in model.state_dict().items()}
        if rank == 0:
            torch.save(full, out)
    finally:
        dist.destroy_process_group()


CASES = [
    ("full-per-block", 2, {"sharding": "full"}),
    ("full-1KiB-units-prefetch2", 2, {"sharding": "full", "unit_bytes": 1024, "forward_prefetch": 2, "backward_prefetch": 2}),
    ("full-no-reshard", 2, {"sharding": "full", "reshard_after_forward": False, "forward_prefetch": 0}),
    ("grad", 2, {"sharding": "grad", "unit_bytes": 2048}),
    ("hybrid-2x2", 4, {"sharding": "hybrid", "shard_group_size": 2}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,world,knobs", CASES, ids=[c[0] for c in CASES])
def test_parameters_after_steps_equal_all_reduce_dp(tmp_path, name, world, knobs):
    import torch.multiprocessing as mp

    out = str(tmp_path / "params.pt")
    mp.spawn(_worker, args=(world, _free_port(), knobs, 2, out), nprocs=world, join=True)
    got = torch.load(out)
    want = _reference(2, world)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")


def _root_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from commtune.runtime.shard import shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = shard(Tiny(), Knobs(sharding="full", reshard_after_forward=True))
        loss = _loss(model, rank, 0)  # after the forward, before the backward
        state = {"root": model._get_fsdp_state()._fsdp_param_group.is_unsharded,
                 "block": model.layers[0].up._get_fsdp_state()._fsdp_param_group.is_unsharded}
        loss.backward()
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_root_stays_gathered_after_forward_and_blocks_reshard(tmp_path):
    """reshard_after_forward applies to the blocks; the root unit keeps FSDP2's default (the simulator's kept unit)."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "state.pt")
    mp.spawn(_root_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    assert torch.load(out) == {"root": True, "block": False}


@pytest.mark.parametrize("behind", [0, 2])
def test_backward_prefetch_lists_and_zero_means_none(behind):
    """backward_prefetch N lists the N units before; 0 lists the unit itself (no prefetch), not an
    empty list, which FSDP2 reads as its implicit prefetch of the previous unit."""
    import torch.distributed as dist

    from commtune.probe.launch import free_port
    from commtune.runtime.shard import apply_plan

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = Tiny(depth=4)
        plan = plan_shard(model, Knobs(sharding="full", backward_prefetch=behind), 1)
        model = apply_plan(model, plan)
        units = [model] + [block.up for block in model.layers]  # the root, then the blocks' handles
        states = [u._get_fsdp_state() for u in units]
        for i, u in enumerate(units):
            want = [states[j] for j in range(i - 1, max(0, i - behind) - 1, -1)] or [states[i]]
            assert u._get_fsdp_state()._states_to_backward_prefetch == want
    finally:
        dist.destroy_process_group()
