"""Exporters: write a tuned profile in the terms of one training stack.

The registry maps a format name to an :class:`~commtune.exporters.base.Exporter`
class::

    from commtune.exporters import get_exporter
    result = get_exporter("horovod").export(profile)
    result.text, result.suffix, result.applied, result.unsupported

A new format is one module with an Exporter subclass plus one
:func:`register_exporter` call (or entry below).
"""
from __future__ import annotations

from commtune.errors import CommtuneError, did_you_mean
from commtune.exporters.base import Exporter, ExportResult, Unsupported
from commtune.exporters.ddp import DdpExporter
from commtune.exporters.deepspeed import DeepSpeedExporter
from commtune.exporters.fsdp2 import Fsdp2Exporter
from commtune.exporters.horovod import HorovodExporter
from commtune.exporters.json_ import JsonKnobsExporter
from commtune.exporters.megatron import MegatronExporter
from commtune.exporters.nccl import NcclExporter

EXPORTERS: dict[str, type[Exporter]] = {
    cls.name: cls for cls in (DdpExporter, HorovodExporter, NcclExporter, DeepSpeedExporter, Fsdp2Exporter,
                              MegatronExporter, JsonKnobsExporter)
}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Add ``cls`` under ``cls.name`` (usable as a class decorator)."""
    EXPORTERS[cls.name] = cls
    return cls


def get_exporter(name: str) -> Exporter:
    """An instance of the exporter called ``name``; unknown names are a CommtuneError."""
    if name not in EXPORTERS:
        raise CommtuneError(
            f"unknown export format {name!r}{did_you_mean(name, list(EXPORTERS))}; choose one of: {', '.join(EXPORTERS)}"
        )
    return EXPORTERS[name]()


__all__ = ["EXPORTERS", "Exporter", "ExportResult", "Unsupported", "get_exporter", "register_exporter"]
