"""PyTorch FSDP2: the ``fully_shard`` units, their arguments and a Python snippet that applies them.

Checked against ``torch.distributed.fsdp.fully_shard`` (torch 2.13,
``_fully_shard/_fully_shard.py``): ``fully_shard(module | list[module], *,
mesh, reshard_after_forward: bool | int, mp_policy=MixedPrecisionPolicy(
param_dtype, reduce_dtype))``; a 2-D mesh ``(replicate, shard)`` is HSDP;
``FSDPModule.set_modules_to_forward_prefetch`` / ``set_modules_to_backward_prefetch``
set how many units are gathered ahead. A commtune unit is a set of whole
layers (modules), so every ``unit_bytes`` is expressible: a unit of several
layers is one ``fully_shard([...])`` call (list form). ``sharding: grad`` is
``reshard_after_forward=False`` on every unit (FSDP1's SHARD_GRAD_OP: one
all-gather per step). ``sharding: none`` is refused: it is DDP's job
(``--format ddp``).
"""
from __future__ import annotations

from typing import Any

from commtune.exporters.base import Draft, JsonExporter
from commtune.exporters.sharded import ProfileModel, profile_model, sharded_layout

#: FSDP2's unsharded-parameter dtype for each commtune compute precision (None: the parameters' own, fp32).
PARAM_DTYPE = {"fp32": None, "amp": None, "fp16": "float16", "bf16": "bfloat16"}
REDUCE_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}


class Fsdp2Exporter(JsonExporter):
    name = "fsdp2"
    description = "PyTorch FSDP2 fully_shard units, mesh, prefetch and mixed precision (JSON + Python snippet)"

    def translate(self, d: Draft) -> None:
        a = d.active
        pm = profile_model(d.profile)
        layout = sharded_layout(d, pm, "FSDP2")
        if a["sharding"] == "hybrid":
            d.apply("sharding", "HSDP: fully_shard over a 2-D mesh (replicate, shard)")
            d.set("mesh.shape", [layout.replicas, layout.group], "shard_group_size",
                  f"init_device_mesh('cuda', ({layout.replicas}, {layout.group}), mesh_dim_names=('replicate', "
                  f"'shard')): shard groups of {layout.group} ranks, {layout.replicas} replicas")
            d.set("mesh.dim_names", ["replicate", "shard"])
        else:
            d.set("mesh.shape", [layout.world], "sharding", f"1-D mesh of all {layout.world} ranks")
        if a["sharding"] == "grad":
            d.set("fully_shard.reshard_after_forward", False, "sharding",
                  "sharding grad: parameters stay gathered from forward to the end of backward (SHARD_GRAD_OP)")
        else:
            raf = a["reshard_after_forward"]
            d.set("fully_shard.reshard_after_forward", raf, "reshard_after_forward",
                  "on every unit; the root keeps FSDP2's default (None: gathered from the forward into the "
                  "backward that needs it first), as commtune.runtime.shard applies it")
        precision = d.profile.model.get("precision")
        d.set("fully_shard.mp_policy.param_dtype", PARAM_DTYPE.get(precision),
              comment=f"compute precision {precision}: null = the parameters' dtype (amp: autocast)")
        d.set("fully_shard.mp_policy.reduce_dtype", REDUCE_DTYPE[a["reduce_precision"]], "reduce_precision",
              "MixedPrecisionPolicy(reduce_dtype=...): dtype of the gradient reduce-scatter (and HSDP all-reduce)")
        self._units(d, pm)
        fwd = a["forward_prefetch"]
        if fwd == 0:
            d.unsupported_knob("forward_prefetch", "FSDP2 always issues the next unit's all-gather ahead of its "
                                                   "forward (implicit prefetch of 1); it cannot be turned off")
        else:
            d.set("forward_prefetch", fwd, "forward_prefetch",
                  "unit i: set_modules_to_forward_prefetch(units[i+1 : i+1+N])")
        if "backward_prefetch" in a:
            d.set("backward_prefetch", a["backward_prefetch"], "backward_prefetch",
                  "unit i: set_modules_to_backward_prefetch(units[i-N : i] reversed); 0 = [unit i] itself, which "
                  "prefetches nothing (an empty list is FSDP2's implicit prefetch of the previous unit)")
        d.set("snippet", snippet(d.settings, a))

    def _units(self, d: Draft, pm: ProfileModel) -> None:
        unit_bytes = d.active["unit_bytes"]
        if pm.units is None:
            d.set("unit_bytes", unit_bytes, "unit_bytes",
                  "units not listed: call fully_shard on groups of consecutive modules of up to this many fp32 "
                  "bytes, in ready (backward) order")
            d.note(f"{pm.reason}: the export gives the unit size, not the units")
            d.set("units", None)
            return
        layers = pm.model.layers
        units = []
        for u in pm.units:
            if u.name == "root":
                continue  # fully_shard(model) holds the rest
            if unit_bytes == 0 and layers[u.first].block is not None:
                modules = [u.name]  # the block module itself
            else:
                modules = [layers[i].name for i in u.layers if layers[i].tensors]
            units.append({"name": u.name, "modules": modules, "numel": u.numel})
        how = ("one unit per model block" if unit_bytes == 0 and any(layer.block for layer in layers)
               else "one unit per layer with parameters (the model has no block annotations)" if unit_bytes == 0
               else f"consecutive layers up to {unit_bytes // 4} elements ({unit_bytes} fp32 bytes), ready order")
        d.set("units", units, "unit_bytes", f"{len(units)} fully_shard units in forward order, {how}; "
                                           "the root fully_shard(model) holds every parameter outside them")


def snippet(settings: dict[str, Any], active: dict[str, Any]) -> str:
    """Python applying ``settings`` with ``fully_shard`` (run after ``dist.init_process_group``)."""
    shape = tuple(settings["mesh.shape"])
    names = ", mesh_dim_names=('replicate', 'shard')" if len(shape) == 2 else ""
    param = settings["fully_shard.mp_policy.param_dtype"]
    raf = settings["fully_shard.reshard_after_forward"]
    units = settings.get("units")
    lines = [
        "import torch",
        "from torch.distributed.device_mesh import init_device_mesh",
        "from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard",
        "",
        f"mesh = init_device_mesh('cuda', {shape!r}{names})",
        f"mp = MixedPrecisionPolicy(param_dtype={'torch.' + param if param else None}, "
        f"reduce_dtype=torch.{settings['fully_shard.mp_policy.reduce_dtype']})",
        f"kw = dict(mesh=mesh, reshard_after_forward={raf!r}, mp_policy=mp)",
    ]
    if units is None:
        lines.append(f"UNITS = ...  # lists of module names, consecutive, up to {settings['unit_bytes']} fp32 bytes each")
    else:
        lines.append(f"UNITS = {[u['modules'] for u in units]!r}")
    lines += [
        "units = []",
        "for names in UNITS:  # bottom-up, forward order",
        "    mods = [model.get_submodule(n) for n in names]",
        "    u = fully_shard(mods if len(mods) > 1 else mods[0], **kw)",
        "    units.append(u[0] if isinstance(u, list) else u)",
        "fully_shard(model, **{**kw, 'reshard_after_forward': None})  # root: every parameter outside the units, "
        "kept gathered into the backward",
    ]
    fwd, bwd = settings.get("forward_prefetch"), settings.get("backward_prefetch")
    if fwd or bwd is not None:
        lines.append("for i, u in enumerate(units):")
        if fwd:
            lines.append(f"    u.set_modules_to_forward_prefetch(units[i + 1:i + {1 + fwd}])")
        if bwd is not None:
            lines.append(f"    u.set_modules_to_backward_prefetch(units[max(0, i - {bwd}):i][::-1] or [u])  "
                         "# [u]: no prefetch ([] is FSDP2's implicit one)")
    return "\n".join(lines) + "\n"
