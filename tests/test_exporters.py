"""Exporters: exact values, unsupported knobs reported, the 'nothing expressible' rule."""
from __future__ import annotations

import itertools
import json

import pytest

from commtune.errors import CommtuneError
from commtune.exporters import EXPORTERS, get_exporter
from commtune.exporters.base import Draft, EnvExporter
from commtune.exporters.nccl import socket_split
from commtune.units import MB, MiB

from conftest import make_profile, parse_env



def export(fmt, **kw):
    precision = kw.pop("precision", "amp")
    return get_exporter(fmt).export(make_profile(precision, **kw))


def unsupported(result) -> dict:
    return {u.knob: u for u in result.unsupported}


# --- registry -------------------------------------------------------------

def test_registry_names_and_unknown_format():
    assert list(EXPORTERS) == ["ddp", "horovod", "nccl", "deepspeed", "fsdp2", "megatron", "json"]
    for name, cls in EXPORTERS.items():
        assert cls.name == name and cls.description and cls.suffix in (".env", ".json")
    with pytest.raises(CommtuneError, match="unknown export format 'horovd'.*did you mean 'horovod'.*ddp, horovod"):
        get_exporter("horovd")


# --- horovod ----------------------------------------------------------------

def test_horovod_exact_values():
    r = export("horovod", fusion_threshold_bytes=64 * MiB, cycle_time_ms=3.5, num_streams=2, hierarchical=True,
               stream_mode="round_robin")
    env = parse_env(r.text)
    assert env == {"HOROVOD_FUSION_THRESHOLD": "67108864", "HOROVOD_CYCLE_TIME": "3.5",
                   "HOROVOD_NUM_NCCL_STREAMS": "2", "HOROVOD_HIERARCHICAL_ALLREDUCE": "1"}
    assert r.unsupported == [] and r.suffix == ".env"
    assert parse_env(export("horovod", cycle_time_ms=1.0).text)["HOROVOD_CYCLE_TIME"] == "1"
    assert parse_env(export("horovod").text)["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "0"


def test_stream_mode_where_each_target_can_express_it():
    """Horovod: successive buffers on successive streams only; NCCL: every collective over all its
    sockets only; commtune's DDP runtime: both; one stream: the mode has no effect anywhere."""
    for fmt, only in (("horovod", "round_robin"), ("nccl", "split")):
        other = "split" if only == "round_robin" else "round_robin"
        assert "stream_mode" in export(fmt, num_streams=2, stream_mode=only).applied
        u = unsupported(export(fmt, num_streams=2, stream_mode=other))
        assert u["stream_mode"].value == other and only.replace("_", " ") in u["stream_mode"].reason
        assert "stream_mode" in export(fmt, num_streams=1, stream_mode=other).applied
    for mode in ("split", "round_robin"):
        d = json.loads(export("ddp", fusion_policy="static", num_streams=4, stream_mode=mode).text)
        assert d["stream_mode"] == mode and d["num_streams"] == 4
        assert "stream_mode" in unsupported(export("deepspeed", num_streams=4, stream_mode=mode))
    assert "stream_mode" not in unsupported(export("deepspeed", num_streams=1))


def test_horovod_fp16_and_decentralized_are_reported_with_hints():
    r = export("horovod", wire_precision="fp16", negotiation="decentralized")
    u = unsupported(r)
    assert set(u) == {"wire_precision", "negotiation"}
    assert "hvd.Compression.fp16" in u["wire_precision"].reason
    assert "HOROVOD_CACHE_CAPACITY" in u["negotiation"].reason
    comments = [line for line in r.text.splitlines() if line.startswith("#")]
    assert any("compression=hvd.Compression.fp16" in c for c in comments)
    assert any("negotiation=decentralized" in c for c in comments)


def test_horovod_static_policy_maps_bucket_and_reports_first_bucket():
    r = export("horovod", fusion_policy="static", fusion_threshold_bytes=25 * MiB, first_bucket_bytes=2 * MiB)
    env = parse_env(r.text)
    assert env["HOROVOD_FUSION_THRESHOLD"] == str(25 * MiB)
    assert "HOROVOD_CYCLE_TIME" not in env  # cycle time is inactive under the static policy
    assert set(unsupported(r)) == {"fusion_policy", "first_bucket_bytes"}


# --- ddp --------------------------------------------------------------------

def test_ddp_static_profile():
    r = export("ddp", fusion_policy="static", fusion_threshold_bytes=64 * MiB, first_bucket_bytes=4 * MiB,
               num_streams=3, wire_precision="fp16")
    d = json.loads(r.text)
    assert d["bucket_cap_mb"] == 64.0 and isinstance(d["bucket_cap_mb"], float)
    assert d["first_bucket_bytes"] == 4 * MiB
    assert d["num_streams"] == 3
    assert d["comm_hook"].endswith("fp16_compress_hook")
    assert d["gradient_as_bucket_view"] is True
    # K streams: written for commtune.runtime.wrap, but plain DistributedDataParallel cannot apply them
    u = {x["knob"]: x["reason"] for x in d["_unsupported"]}
    assert set(u) == {"num_streams", "stream_mode"} and "commtune.runtime.wrap" in u["num_streams"]
    assert any("_DEFAULT_FIRST_BUCKET_BYTES" in n and "private" in n for n in d["_notes"])
    one = json.loads(export("ddp", fusion_policy="static", num_streams=1, wire_precision="fp16").text)
    assert one["_unsupported"] == [] and one["num_streams"] == 1  # one stream: plain DDP applies everything


def test_ddp_dynamic_profile_reports_dynamic_knobs():
    r = export("ddp", fusion_threshold_bytes=int(12.5 * MiB), cycle_time_ms=5, negotiation="decentralized",
               hierarchical=True)
    d = json.loads(r.text)
    assert d["bucket_cap_mb"] == 12.5
    assert "first_bucket_bytes" not in d  # inactive under the dynamic policy
    assert d["comm_hook"] is None
    assert {u["knob"] for u in d["_unsupported"]} == {"fusion_policy", "cycle_time_ms", "negotiation", "hierarchical"}


# --- deepspeed ------------------------------------------------------------

@pytest.mark.parametrize("precision,elements", [("fp32", 25_000_000), ("amp", 25_000_000),
                                                ("fp16", 50_000_000), ("bf16", 50_000_000)])
def test_deepspeed_bucket_in_elements(precision, elements):
    d = json.loads(export("deepspeed", precision=precision, fusion_threshold_bytes=100 * MB).text)
    z = d["zero_optimization"]
    assert z["reduce_bucket_size"] == elements and z["allgather_bucket_size"] == elements
    assert z["overlap_comm"] is True
    assert "communication_data_type" not in d


def test_deepspeed_fp16_wire_and_unsupported():
    r = export("deepspeed", wire_precision="fp16", num_streams=4, hierarchical=True)
    d = json.loads(r.text)
    assert d["communication_data_type"] == "fp16"
    assert {u["knob"] for u in d["_unsupported"]} == {"fusion_policy", "cycle_time_ms", "negotiation",
                                                       "num_streams", "stream_mode", "hierarchical"}


def test_deepspeed_needs_precision():
    p = make_profile()
    p.model.pop("precision")
    with pytest.raises(CommtuneError, match="precision"):
        get_exporter("deepspeed").export(p)


# --- nccl -------------------------------------------------------------------

@pytest.mark.parametrize("streams,split", [(1, (1, 1)), (2, (2, 1)), (7, (1, 7)), (8, (4, 2)), (16, (4, 4))])
def test_nccl_socket_split(streams, split):
    assert socket_split(streams) == split


def test_nccl_flat_profile():
    r = export("nccl", num_streams=8)
    env = parse_env(r.text)
    assert env == {"NCCL_SOCKET_NTHREADS": "4", "NCCL_NSOCKS_PERTHREAD": "2", "NCCL_ALGO": "Ring"}
    assert int(env["NCCL_SOCKET_NTHREADS"]) * int(env["NCCL_NSOCKS_PERTHREAD"]) <= 64
    assert {"fusion_policy", "fusion_threshold_bytes", "cycle_time_ms", "negotiation"} == set(unsupported(r))


def test_nccl_hierarchical_is_not_faked():
    r = export("nccl", hierarchical=True, wire_precision="fp16")
    assert "NCCL_ALGO" not in parse_env(r.text)
    assert {"hierarchical", "wire_precision"} <= set(unsupported(r))
    assert "# NOT EXPRESSIBLE" in r.text


# --- json -------------------------------------------------------------------

def test_json_has_everything():
    r = export("json", fusion_policy="static", num_streams=2)
    d = json.loads(r.text)
    assert d["knobs"]["num_streams"] == 2 and d["knobs"]["fusion_policy"] == "static"
    assert "cycle_time_ms" not in d["active_knobs"] and "first_bucket_bytes" in d["active_knobs"]
    assert d["predicted"]["step_time_s"] == 0.2
    assert d["_unsupported"] == [] and r.unsupported == []


# --- properties over all exporters and many configurations -----------------

CONFIGS = [dict(zip(("fusion_policy", "negotiation", "hierarchical", "wire_precision", "num_streams"), v))
           for v in itertools.product(("dynamic", "static"), ("central", "decentralized"), (False, True),
                                      ("fp32", "fp16"), (1, 4))]


@pytest.mark.parametrize("fmt", [f for f in EXPORTERS if f != "fsdp2"])  # fsdp2 refuses sharding none
def test_every_active_knob_is_applied_or_reported(fmt):  # sharded configs: tests/test_sharded_exporters.py
    for cfg in CONFIGS:
        p = make_profile(**cfg)
        r = get_exporter(fmt).export(p)
        active = set(p.knobs.active())
        reported = {u.knob for u in r.unsupported}
        assert set(r.applied) | reported == active and not set(r.applied) & reported
        if r.suffix == ".env":
            parse_env(r.text)
            for u in r.unsupported:
                assert f"#   {u.knob}=" in r.text
        else:
            d = json.loads(r.text)
            assert {u["knob"] for u in d["_unsupported"]} == reported
        assert len(r.warnings()) == len(r.unsupported)
        assert all("\n" not in w for w in r.warnings())


# --- the 'nothing expressible' rule -----------------------------------------

class OnlyHierarchical(EnvExporter):
    """A target that can express only hierarchical=true."""

    name = "only-hier"
    description = "test target"

    def translate(self, d: Draft) -> None:
        for knob in d.active:
            if knob == "hierarchical" and d.active[knob]:
                d.set("HIER", 1, knob)
            else:
                d.unsupported_knob(knob, "not expressible here")


def test_nothing_expressible_is_an_error():
    with pytest.raises(CommtuneError, match="cannot express any tuned knob") as exc:
        OnlyHierarchical().export(make_profile())
    assert "\n" not in str(exc.value)
    assert parse_env(OnlyHierarchical().export(make_profile(hierarchical=True)).text) == {"HIER": "1"}


def test_exporter_that_drops_a_knob_is_a_bug():
    class Forgetful(OnlyHierarchical):
        def translate(self, d: Draft) -> None:
            d.set("HIER", 1, "hierarchical")

    with pytest.raises(RuntimeError, match="applied xor unsupported"):
        Forgetful().export(make_profile())
