"""Re-fit a calibration file from the raw measurements it stores, with this version's model.

A calibration file keeps what the probe measured (``measurements``,
``burst_measurements``, ``host_measurements``, ``collective_measurements``) and the DDP calibration run's
step times (``ddp_calibration_measurements``, ``ddp_tail_measurements``) and the FSDP calibration
run's (``fsdp_calibration_measurements``). When the network model changes,
an old calibration is brought up to date without re-running anything:
``commtune probe --refit OLD.yaml -o NEW.yaml``. The fit settings (minimum fit
size, weighting) are the ones the file was made with.
"""
from __future__ import annotations

import os

from commtune.cluster import ClusterSpec, read_cluster_doc
from commtune.errors import CommtuneError

_RECORD_EXTRAS = ("busbw_Bps",)  # derived columns the file adds to each probe record


def refit_calibration(path: str | os.PathLike, name: str | None = None) -> tuple[ClusterSpec, dict]:
    """``(spec, extra)`` as :func:`~commtune.probe.probe.calibration` (+ the DDP fits) would
    write them, from the measurements stored in the calibration file at ``path``."""
    from commtune.probe.ddp_calib import apply_ddp_calibration, apply_last_bucket_delay
    from commtune.probe.fsdp_calib import apply_fsdp_calibration
    from commtune.probe.probe import DEFAULT_FIT_MIN_SIZE, DEFAULT_WEIGHTING, calibration

    doc = read_cluster_doc(path)
    if not doc.get("measurements") or not isinstance(doc.get("fit"), dict):
        raise CommtuneError(f"{os.fspath(path)} has no stored probe measurements to re-fit "
                            "(expected a file written by `commtune probe`)")
    fit = doc["fit"]
    records = [{k: v for k, v in r.items() if k not in _RECORD_EXTRAS} for r in doc["measurements"]]
    result = {"world_size": int(fit.get("world_size") or doc["nodes"] * doc.get("gpus_per_node", 1)),
              "records": records, "engine": fit.get("engine"),
              "bursts": doc.get("burst_measurements") or [], "host": doc.get("host_measurements") or []}
    collectives = doc.get("collective_measurements")
    if isinstance(collectives, dict) and collectives:
        result["collectives"] = {c: [{k: v for k, v in r.items() if k not in _RECORD_EXTRAS} for r in recs]
                                 for c, recs in collectives.items()}
    prov = doc.get("provenance") or {}
    result["host_busy_cores"] = prov.get("host_busy_cores")
    if isinstance(prov.get("plan"), dict):
        result["plan"] = {**prov["plan"], "pilot_records": doc.get("pilot_measurements") or []}
    spec, extra = calibration(result, hosts=int(doc["nodes"]), ranks_per_host=int(doc.get("gpus_per_node", 1)),
                              min_fit_size=int(fit.get("min_fit_size_bytes", DEFAULT_FIT_MIN_SIZE)),
                              name=name or str(doc.get("name", "calibrated")), source=str(prov.get("source", "")),
                              weighting=str(fit.get("weighting", DEFAULT_WEIGHTING)))
    ddp = doc.get("ddp_calibration_measurements")
    if ddp:
        spec = apply_ddp_calibration(spec, extra, ddp)
    spec = apply_last_bucket_delay(spec, extra, doc.get("ddp_tail_measurements") or [])
    spec = apply_fsdp_calibration(spec, extra, doc.get("fsdp_calibration_measurements") or [])
    extra["provenance"]["refit_of"] = {"path": os.fspath(path), "created_at": prov.get("created_at"),
                                       "tool": prov.get("tool")}
    return spec, extra
