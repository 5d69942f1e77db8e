"""Look at (and disrupt) a shared study from inside an emulated host's namespace.

A study server on the emulated bridge is reachable only from the cluster's
namespaces, so tests and benchmarks run this module there::

    ip netns exec da-host0 python -m commtune.emulation.study_probe dump URL STUDY
    ip netns exec da-host0 python -m commtune.emulation.study_probe wait URL STUDY N
    ip netns exec da-host0 python -m commtune.emulation.study_probe kill URL STUDY PID MIN_COMPLETE

``dump`` prints the study's trials as JSON; ``wait`` blocks until the study
holds N complete trials; ``kill`` waits until the study
holds ``MIN_COMPLETE`` complete trials, then kills -9 process ``PID`` (a
worker's outer PID) at a moment it holds a RUNNING trial (it is paused with
SIGSTOP while its trials are looked up) and prints that trial and the time.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def _study(url: str, name: str):
    import optuna

    from commtune.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(url))


def trial_rows(url: str, name: str) -> list[dict]:
    return [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
             "system_attrs": t.system_attrs, "user_attrs": t.user_attrs,
             "start": t.datetime_start.timestamp() if t.datetime_start else None,
             "end": t.datetime_complete.timestamp() if t.datetime_complete else None}
            for t in _study(url, name).get_trials(deepcopy=False)]


def wait_complete(url: str, name: str, n: int, timeout_s: float = 300.0) -> int:
    """Block until the study holds ``n`` complete trials; how many it holds."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        try:
            done = len(_study(url, name).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        except Exception:  # noqa: BLE001 -- the study does not exist yet
            pass
        if done >= n:
            break
        time.sleep(0.2)
    return done


def kill_holding(url: str, name: str, pid: int, min_complete: int, timeout_s: float = 180.0) -> dict:
    """kill -9 ``pid`` while one of its trials is RUNNING; that trial and the kill time."""
    from optuna.trial import TrialState

    pidns = os.readlink(f"/proc/{pid}/ns/pid")
    deadline = time.monotonic() + timeout_s
    wait_complete(url, name, min_complete, timeout_s)
    study = _study(url, name)
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        held = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.system_attrs.get("commtune:worker", {}).get("pidns") == pidns]
        if held:
            os.kill(pid, signal.SIGKILL)
            return {"number": held[0].number, "params": held[0].params, "kill_time": time.time()}
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    os.kill(pid, signal.SIGCONT)
    raise SystemExit("the worker never held a running trial")


def main(argv: list[str] | None = None) -> int:
    a = sys.argv[1:] if argv is None else argv
    if a[:1] == ["dump"] and len(a) == 3:
        print(json.dumps(trial_rows(a[1], a[2]), default=str))
    elif a[:1] == ["wait"] and len(a) == 4:
        print(json.dumps(wait_complete(a[1], a[2], int(a[3]))))
    elif a[:1] == ["kill"] and len(a) == 5:
        print(json.dumps(kill_holding(a[1], a[2], int(a[3]), int(a[4])), default=str))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
