"""Starting or joining Ray for a search: address check, runtime environment, ``ray.init``."""
from __future__ import annotations

import os
import socket
import tempfile

from commtune.errors import CommtuneError
from commtune.search import SearchConfig

CONNECT_TIMEOUT_S = 10.0


def check_address(address: str) -> None:
    """Fail within seconds on an address nothing listens on (Ray itself retries for minutes)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise CommtuneError(f"--ray-address {address!r}: expected HOST:PORT of the Ray head (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise CommtuneError(f"cannot reach the Ray head at {address}: {exc.strerror or exc}") from None


def runtime_env() -> dict:
    """Ship commtune, its simulators and search spaces to the cluster's nodes."""
    import commtune
    import search_spaces
    import simulators

    mods = [os.path.dirname(m.__file__) for m in (commtune, simulators, search_spaces)]
    return {"py_modules": mods, "env_vars": {"OMP_NUM_THREADS": "1"},
            "excludes": ["__pycache__", "*.pyc", "*.db", "*.log"]}


def init_ray(config: SearchConfig) -> bool:
    """Start or join Ray; True if this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if config.ray_address:
        check_address(config.ray_address)
        kwargs.update(address=config.ray_address, runtime_env=runtime_env())
    else:
        temp = config.ray_temp_dir or os.path.join(tempfile.gettempdir(), "ct-ray")
        kwargs.update(include_dashboard=False, _temp_dir=temp,  # plus the CPUs a live objective's rank actors take
                      num_cpus=max(config.concurrency, 1) + int(getattr(config.objective, "ray_cpus", 0)))
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise CommtuneError(f"cannot start or join Ray: {first_line(exc)}") from None
    return True


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["check_address", "runtime_env", "init_ray", "first_line", "place_objective"]


def place_objective(config: SearchConfig, started: bool) -> bool:
    """Hook: an objective with its own processes (a live objective's worker group) places them on
    the Ray cluster once, before the trials; True if it keeps Ray running after this run (its
    ``close()`` shuts down the instance this run ``started``)."""
    place = getattr(config.objective, "place_on_ray", None)
    return bool(place(owns_ray=started)) if place is not None else False
