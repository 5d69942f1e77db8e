"""NCCL: environment variables of the collective library itself.

NCCL does not fuse gradients or negotiate (the framework above it does), so
only streams and the flat/hierarchical choice have NCCL counterparts:

* ``num_streams`` -- commtune's streams are concurrent flows that get around a
  per-flow cap. NCCL's socket transport opens ``NCCL_SOCKET_NTHREADS x
  NCCL_NSOCKS_PERTHREAD`` sockets per connection (product <= 64, threads <= 16),
  so the product is set to the stream count. Channels (``NCCL_M*_NCHANNELS``)
  are left to NCCL: each costs an SM and NCCL sizes them from the topology.
* ``hierarchical=false`` -- the flat ring commtune modelled is ``NCCL_ALGO=Ring``.
  ``true`` (reduce-scatter in the node, all-reduce across, all-gather in the
  node) has no NCCL switch: Tree, CollNet and NVLS are different algorithms
  that NCCL picks itself by topology and size.
"""
from __future__ import annotations

from commtune.exporters.base import Draft, EnvExporter, all_reduce_only

MAX_SOCKET_THREADS = 4  # more helper threads than this per connection rarely pays (AWS uses 2, GCP 4)


def socket_split(streams: int) -> tuple[int, int]:
    """(threads, sockets per thread) with threads * sockets == ``streams``, threads <= 4."""
    threads = max(t for t in range(1, min(streams, MAX_SOCKET_THREADS) + 1) if streams % t == 0)
    return threads, streams // threads


class NcclExporter(EnvExporter):
    name = "nccl"
    description = "NCCL environment variables (NCCL_*)"

    def translate(self, d: Draft) -> None:
        a = d.active
        if not all_reduce_only(d, "NCCL"):
            return
        framework = "a framework setting; NCCL only runs the all-reduce it is given"
        d.unsupported_knob("fusion_policy", f"gradient fusion is {framework}")
        d.unsupported_knob("fusion_threshold_bytes", f"the fusion threshold is {framework}")
        for knob in ("first_bucket_bytes", "cycle_time_ms"):
            if knob in a:
                d.unsupported_knob(knob, f"bucketing is {framework}")
        if "negotiation" in a:
            d.unsupported_knob("negotiation", f"readiness negotiation is {framework}")
        threads, socks = socket_split(a["num_streams"])
        comment = (f"{a['num_streams']} concurrent flow(s) per connection = NTHREADS x NSOCKS_PERTHREAD (product <= 64);"
                   " socket transport only (on InfiniBand/RoCE NCCL_IB_QPS_PER_CONNECTION is the analog, not set)")
        d.set("NCCL_SOCKET_NTHREADS", threads, "num_streams", comment)
        d.set("NCCL_NSOCKS_PERTHREAD", socks, "num_streams")
        if a["stream_mode"] == "split" or a["num_streams"] == 1:
            d.apply("stream_mode", "NCCL spreads every all-reduce over all its sockets (split)")
        else:
            d.unsupported_knob("stream_mode", "NCCL spreads every all-reduce over all its sockets (split); putting "
                                              "whole buffers on separate communicators in turn is "
                                              f"{framework.split(';')[0]} (commtune.runtime, HOROVOD_NUM_NCCL_STREAMS)")
        if a["hierarchical"]:
            d.unsupported_knob("hierarchical", "NCCL has no two-level all-reduce switch; it already chooses "
                                               "topology-aware rings/trees/CollNet itself (NCCL_ALGO=Tree is a "
                                               "different algorithm, not an equivalent); use the framework's "
                                               "hierarchical mode, e.g. HOROVOD_HIERARCHICAL_ALLREDUCE=1")
        else:
            d.set("NCCL_ALGO", "Ring", "hierarchical",
                  "the flat ring commtune modelled; forces Ring for every collective -- remove to let NCCL choose "
                  "(it may pick Tree for small messages on many nodes)")
        if a["wire_precision"] == "fp16":
            d.unsupported_knob("wire_precision", "NCCL reduces the dtype it is given; cast in the framework "
                                                 "(DDP fp16_compress_hook, hvd.Compression.fp16)")
        else:
            d.apply("wire_precision", "NCCL sends the gradients' own dtype")
