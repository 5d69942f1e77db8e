"""Tiny TCP throughput and RTT probes, run inside the emulated hosts.

``python -m commtune.emulation.netbench recv|send|echo|ping ...``; the
receiver/pinger prints one JSON line. :func:`measure_throughput` and
:func:`measure_rtt` run a pair through :func:`~commtune.emulation.launch.run_on_hosts`.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from typing import Any

from commtune.emulation.launch import run_on_hosts
from commtune.emulation.state import ClusterState

CHUNK = 256 * 1024
WARMUP_S = 0.3


def _recv(port: int, flows: int) -> dict[str, Any]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(flows)
    srv.settimeout(30)
    conns = [srv.accept()[0] for _ in range(flows)]
    srv.close()
    lock = threading.Lock()
    total = [0]
    per_flow = [0] * flows
    first: list[float] = []
    ends: list[float] = []

    def drain(i: int, c: socket.socket) -> None:
        while True:
            data = c.recv(CHUNK)
            if not data:
                break
            with lock:
                if not first:
                    first.append(time.monotonic())
                total[0] += len(data)
                per_flow[i] += len(data)
        with lock:
            ends.append(time.monotonic())
        c.close()

    threads = [threading.Thread(target=drain, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    while not first:
        time.sleep(0.001)
    time.sleep(WARMUP_S)
    with lock:
        t0, b0, f0 = time.monotonic(), total[0], list(per_flow)
    for t in threads:
        t.join()
    t1 = max(ends)
    rate = (total[0] - b0) / max(t1 - t0, 1e-9)
    flow_rates = [(per_flow[i] - f0[i]) / max(t1 - t0, 1e-9) for i in range(flows)]
    return {"flows": flows, "bytes": total[0], "seconds": t1 - t0, "rate_Bps": rate, "flow_rates_Bps": flow_rates}


def _connect(host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _send(host: str, port: int, flows: int, seconds: float) -> None:
    socks = [_connect(host, port) for _ in range(flows)]
    buf = b"\0" * CHUNK
    stop = time.monotonic() + seconds

    def pump(s: socket.socket) -> None:
        s.settimeout(None)
        while time.monotonic() < stop:
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # wait for the receiver's close
        s.close()

    threads = [threading.Thread(target=pump, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _echo(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(30)
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := c.recv(64):
        c.sendall(data)
    c.close()


def _ping(host: str, port: int, count: int) -> dict[str, Any]:
    s = _connect(host, port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for i in range(count + 10):
        t = time.perf_counter()
        s.sendall(b"x" * 32)
        got = 0
        while got < 32:
            got += len(s.recv(64))
        if i >= 10:
            rtts.append(time.perf_counter() - t)
        time.sleep(0.002)
    s.close()
    rtts.sort()
    return {"count": count, "p50_s": statistics.median(rtts), "min_s": rtts[0], "p90_s": rtts[int(0.9 * (count - 1))]}


def measure_throughput(state: ClusterState, flows: int = 1, seconds: float = 1.5, src: int = 0, dst: int = 1,
                       port: int = 5201) -> dict[str, Any]:
    """Send for ``seconds`` over ``flows`` TCP streams from host ``src`` to ``dst``; return the receiver's report."""
    py = [sys.executable, "-m", "commtune.emulation.netbench"]
    res = run_on_hosts(state, [[*py, "recv", "--port", str(port), "--flows", str(flows)],
                               [*py, "send", "--to", state.address(dst), "--port", str(port), "--flows", str(flows),
                                "--seconds", str(seconds)]],
                       hosts=[dst, src], timeout_s=seconds + 30)
    return json.loads(res[0].stdout.strip().splitlines()[-1])


def measure_rtt(state: ClusterState, a: int = 0, b: int = 1, count: int = 200, port: int = 5202) -> dict[str, Any]:
    """TCP ping-pong (32 B, TCP_NODELAY) from host ``a`` to ``b``; RTT percentiles in seconds."""
    py = [sys.executable, "-m", "commtune.emulation.netbench"]
    res = run_on_hosts(state, [[*py, "echo", "--port", str(port)],
                               [*py, "ping", "--to", state.address(b), "--port", str(port), "--count", str(count)]],
                       hosts=[b, a], timeout_s=60)
    return json.loads(res[1].stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netbench")
    p.add_argument("mode", choices=["recv", "send", "echo", "ping"])
    p.add_argument("--to", default="")
    p.add_argument("--port", type=int, default=5201)
    p.add_argument("--flows", type=int, default=1)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--count", type=int, default=200)
    a = p.parse_args(argv)
    if a.mode == "recv":
        print(json.dumps(_recv(a.port, a.flows)))
    elif a.mode == "send":
        _send(a.to, a.port, a.flows, a.seconds)
    elif a.mode == "echo":
        _echo(a.port)
    else:
        print(json.dumps(_ping(a.to, a.port, a.count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
