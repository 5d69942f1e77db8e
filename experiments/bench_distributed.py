"""Distributed search across emulated machines: shared PostgreSQL study, worker death, Ray cluster.

Claim: distributed search holds up: 8 workers share one PostgreSQL study without duplicated trials, a killed worker's trial is retried, and a Ray cluster spreads trials over its nodes.
Runs: several minutes. Root: yes (emulated machines, PostgreSQL).
Writes: ``experiments/results/bench_distributed.{md,json}``.

Needs root, ``ip``/``unshare`` and PostgreSQL server binaries (Debian package
``postgresql``). An emulated cluster (prefix ``db`` by default) gives every
worker its own network namespace, hostname and PID namespace; PostgreSQL
runs in host 0's namespace on the bridge.

1. **Shared study**: 8 workers (same command, same seed) on one study of
   160 trials. Duplicated configurations, exact count, wall time against the
   ideal: one worker's wall time for 160/8 = 20 trials.
2. **Worker death**: 3 workers, one killed -9 while it holds a RUNNING
   trial (default heartbeat 5 s, grace 20 s). Kill-to-retry time, RUNNING
   left, budget.
3. **Ray**: 30 simulator trials by a driver on a two-node Ray cluster
   (concurrency 4) against the Optuna backend's 30 trials, both timed as
   whole commands from the same emulated host; nodes used.

    python experiments/bench_distributed.py [--prefix db] [--repeats 1]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import ROOT, write_json, write_md

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
CMD = [sys.executable, "-m", "commtune", "search", "--model", "resnet50", "--json", "--no-profile", "--quiet"]


def _load() -> str:
    return open("/proc/loadavg").read().split()[0]


def _probe(state, *args: str):
    r = subprocess.run([*state.launch_prefix(0), sys.executable, "-m", "commtune.emulation.study_probe", *args],
                       capture_output=True, text=True, env=ENV, timeout=900)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout)


def _spawn(state, host: int, hostname: str, argv: list[str]):
    from commtune.emulation.machine import spawn

    return spawn(hostname, hostname, argv, netns=state.hosts[host].netns, env=ENV, cwd=tempfile.gettempdir())


def _finish(machines, timeout: float = 900) -> list[tuple[int, str, str]]:
    return [r[:3] for r in _finish_cpu(machines, timeout)]


def _finish_cpu(machines, timeout: float = 900) -> list[tuple[int, str, str, float]]:
    """(exit code, stdout, stderr, CPU seconds of the worker and its descendants) per machine."""
    out = []
    for m in machines:
        _, status, ru = os.wait4(m.proc.pid, 0)  # the zombie's usage includes its reaped children
        m.proc.returncode = os.waitstatus_to_exitcode(status)
        stdout, stderr = m.proc.communicate(timeout=timeout)
        out.append((m.proc.returncode, stdout, stderr, ru.ru_utime + ru.ru_stime))
    return out


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def shared_study(state, url: str, rep: int, workers: int = 8, trials: int = 160) -> dict:
    study = f"shared{rep}"
    t0 = time.monotonic()
    ms = [_spawn(state, 1 + i % (state.num_hosts - 1), f"w{i}", [*CMD, "--storage", url, "--study", study,
                                                                  "--trials", str(trials)]) for i in range(workers)]
    res = _finish_cpu(ms)
    wall = time.monotonic() - t0
    t0 = time.monotonic()
    one = _finish_cpu([_spawn(state, 1, "solo", [*CMD, "--storage", url, "--study", f"solo{rep}",
                                                 "--trials", str(trials // workers)])])
    ideal = time.monotonic() - t0
    cpu = [r[3] for r in res]
    rows = _probe(state, "dump", url, study)
    done = [_key(t["params"]) for t in rows if t["state"] == "COMPLETE"]
    enq = [t for t in rows if "fixed_params" in t["system_attrs"] and "failed_trial" not in t["system_attrs"]]
    return {"workers": workers, "trials": trials, "complete": len(done), "duplicates": len(done) - len(set(done)),
            "enqueued": len(enq), "running_left": sum(t["state"] == "RUNNING" for t in rows),
            "exit_codes": [r[0] for r in res + one], "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
            "ratio": round(wall / ideal, 2), "load": _load(),
            # this host has os.cpu_count() cores for 8 workers and the database: the wall time cannot
            # drop below their CPU time / cores. On 8 machines each worker would take about its own
            # CPU time plus database round trips: the slowest worker's CPU time against the ideal.
            "worker_cpu_s": [round(c, 2) for c in cpu], "solo_cpu_s": round(one[0][3], 2),
            "cpu_floor_s": round(sum(cpu) / os.cpu_count(), 2), "wall_over_cpu_floor": round(wall / (sum(cpu) / os.cpu_count()), 2),
            "projected_ratio": round(max(cpu) / one[0][3], 2)}


def worker_death(state, url: str, rep: int, trials: int = 120) -> dict:
    study = f"death{rep}"
    ms = [_spawn(state, 1 + i, f"m{i}", [*CMD, "--storage", url, "--study", study, "--trials", str(trials)])
          for i in range(3)]
    t0 = time.monotonic()
    killed = _probe(state, "kill", url, study, str(ms[1].pid), "10")
    res = _finish([ms[0], ms[2]])
    wall = time.monotonic() - t0
    rows = _probe(state, "dump", url, study)
    retry = [t for t in rows if t["system_attrs"].get("failed_trial") == killed["number"]]
    states = collections.Counter(t["state"] for t in rows)
    return {"trials": trials, "complete": states["COMPLETE"], "running_left": states["RUNNING"],
            "killed_trial_state": next(t["state"] for t in rows if t["number"] == killed["number"]),
            "retried": len(retry), "retry_state": retry[0]["state"] if retry else None,
            "kill_to_retry_s": round(retry[0]["start"] - killed["kill_time"], 1) if retry else None,
            "survivor_exit_codes": [r[0] for r in res], "wall_s": round(wall, 2), "load": _load()}


def ray_vs_optuna(state, rep: int, trials: int = 30) -> dict:
    from commtune.emulation.ray_cluster import ray_cluster

    tmp = tempfile.mkdtemp(prefix="ctbd")
    with ray_cluster(state, hosts=[1, 2]) as address:
        t0 = time.monotonic()
        (rc, out, err), = _finish([_spawn(state, 3, "driver", [*CMD, "--backend", "ray", "--ray-address", address,
                                                              "--concurrency", "4", "--trials", str(trials),
                                                              "--storage", f"sqlite:///{tmp}/ray{rep}.db"])])
        ray_wall = time.monotonic() - t0
    t0 = time.monotonic()
    (orc, _, oerr), = _finish([_spawn(state, 3, "driver", [*CMD, "--trials", str(trials),
                                                          "--storage", f"sqlite:///{tmp}/opt{rep}.db"])])
    opt_wall = time.monotonic() - t0
    d = json.loads(out) if rc == 0 else {}
    return {"trials": trials, "ray_complete": d.get("trials"), "ray_nodes": d.get("ray_nodes"), "ray_exit": rc,
            "optuna_exit": orc, "ray_wall_s": round(ray_wall, 2), "optuna_wall_s": round(opt_wall, 2),
            "ratio": round(ray_wall / opt_wall, 2), "load": _load(), "ray_err": err.strip()[-300:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default="db")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--parts", default="shared,death,ray")
    a = ap.parse_args()
    from commtune.emulation import down
    from commtune.emulation.postgres import postgres_server
    from commtune.emulation.spec import EmulatedCluster
    from commtune.emulation.topology import up

    os.environ.setdefault("COMMTUNE_RUN_DIR", tempfile.mkdtemp(prefix="ctbd-run"))
    parts = a.parts.split(",")
    out: dict = {p: [] for p in parts}
    state = up(EmulatedCluster.parse(hosts=9, bw="1gbit", prefix=a.prefix), replace=True)
    try:
        with postgres_server(host=state.address(0), netns=state.hosts[0].netns) as url:
            for rep in range(a.repeats):
                if "shared" in parts:
                    out["shared"].append(shared_study(state, url, rep))
                    print("shared", json.dumps(out["shared"][-1]), flush=True)
                if "death" in parts:
                    out["death"].append(worker_death(state, url, rep))
                    print("death", json.dumps(out["death"][-1]), flush=True)
                if "ray" in parts:
                    out["ray"].append(ray_vs_optuna(state, rep))
                    print("ray", json.dumps(out["ray"][-1]), flush=True)
    finally:
        down(a.prefix)
    write_json("bench_distributed.json", out)
    lines = ["# Distributed search (emulated machines, PostgreSQL on the bridge)", ""]
    for r in out.get("shared", []):
        lines.append(f"- 8 workers, 160 trials: {r['complete']} complete, {r['duplicates']} duplicate configs, "
                     f"warm start enqueued {r['enqueued']}x1, wall {r['wall_s']} s vs ideal {r['ideal_s']} s "
                     f"(1 worker, 20 trials): {r['ratio']}x (load {r['load']}); CPU floor on {os.cpu_count()} cores "
                     f"{r['cpu_floor_s']} s (wall / floor {r['wall_over_cpu_floor']}x); slowest worker's CPU "
                     f"{max(r['worker_cpu_s'])} s vs the solo worker's {r['solo_cpu_s']} s: "
                     f"{r['projected_ratio']}x (one machine per worker, projected)")
    for r in out.get("death", []):
        lines.append(f"- kill -9 mid-trial: killed trial {r['killed_trial_state']}, retried {r['retried']}x "
                     f"({r['retry_state']}) {r['kill_to_retry_s']} s after the kill (grace 20 s), "
                     f"{r['complete']}/{r['trials']} complete, {r['running_left']} RUNNING left (load {r['load']})")
    for r in out.get("ray", []):
        lines.append(f"- Ray 2 nodes, {r['trials']} trials: {r['ray_wall_s']} s vs Optuna {r['optuna_wall_s']} s: "
                     f"{r['ratio']}x, nodes used {r['ray_nodes']} (load {r['load']})")
    if out.get("shared"):
        lines.append(f"\nmedian 8-worker ratio {round(statistics.median(r['ratio'] for r in out['shared']), 2)}x")
    write_md("bench_distributed.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
