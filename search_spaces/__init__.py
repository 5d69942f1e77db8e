"""Search spaces shipped with commtune (YAML, validated against the knob
registry :data:`commtune.knobs.KNOBS`).

* ``default.yaml`` -- every knob;
* ``ddp.yaml`` -- what PyTorch DDP plus commtune's runtime can apply;
* ``horovod.yaml`` -- what Horovod exposes;
* ``fsdp.yaml`` / ``hsdp.yaml`` -- what PyTorch FSDP2 applies (full / hybrid sharding);
* ``zero.yaml`` -- what DeepSpeed ZeRO-2/3 exposes.

Load with :func:`commtune.search.space.load_space` (a name from here or a
path to your own file); the format is documented in ``default.yaml``.
"""
from __future__ import annotations

from importlib import resources


def names() -> list[str]:
    """Names of the bundled spaces (file stems)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def read_text(name: str) -> str:
    """Text of the bundled space ``name`` (no ``.yaml``)."""
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text()
