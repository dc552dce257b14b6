"""Starting or joining Ray, and choosing devices from what the machine has."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Optional

import ray

from bridgerec import console

__all__ = ["init_ray", "local_cores", "state_api_reachable", "default_device"]

_LOCAL_CORES: Optional[int] = None  # set when this process started Ray itself
_API_SERVER: Optional[str] = None  # its dashboard (State API) address


def init_ray(cfg: Any = None, *, address: Optional[str] = None, num_cpus: Optional[int] = None) -> dict:
    """Join ``cfg.address`` / ``address`` / ``RAY_ADDRESS`` if given, else start a local Ray.

    ``cfg`` is anything with ``address`` and ``num_cpus`` attributes (the root config's ``ray``
    section, :class:`bridgerec.config.RayConfig`); this leaf module takes plain values so that
    it never imports the config.

    A local Ray gets more logical CPUs than cores (``max(8, cores)``) so that small actors
    (Serve ingress, Data actors) schedule beside 2 training workers on a 2-core machine.
    It runs with Ray's dashboard on a free local port, and its workers get that address in
    ``RAY_API_SERVER_ADDRESS``: Ray's State API lives there, and Train V2's ``PlacementGroupCleaner``
    asks it whether a run's controller is alive. Without a dashboard, or with two local Rays on the
    machine and no address, the cleaner never removes the placement group of a trial that Tune
    stops, and later trials wait for those CPUs forever (seen on Ray 2.60: the shape of
    ray-project/ray#54305). The address goes to this job's workers only, not to ``os.environ``
    (a ``ray start`` launched from here must not inherit it).
    Workers' and actors' output reaches this console only with ``--verbose``
    (:mod:`bridgerec.console`); it is always in Ray's session logs. Returns the cluster resources.
    """
    if cfg is not None:
        address = address or cfg.address
        num_cpus = num_cpus or cfg.num_cpus
    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    loud = console.verbose()
    common = dict(logging_level=logging.INFO, log_to_driver=loud)
    if address:
        ray.init(address=address, **common)
    else:
        global _LOCAL_CORES, _API_SERVER
        num_cpus = num_cpus or max(8, os.cpu_count() or 1)
        port = _free_port()
        _API_SERVER = f"http://127.0.0.1:{port}"
        # this job's workers ask this cluster's State API even when other local Rays run (Tune beside a test suite)
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": _API_SERVER}}, **common)
        _LOCAL_CORES = os.cpu_count() or 1
    ctx = ray.data.DataContext.get_current()  # importing ray.data configures its loggers
    ctx.enable_progress_bars = bool(int(os.environ.get("BRIDGEREC_PROGRESS_BARS", "0")))
    console.quiet_libraries()
    console.detail(f"ray: {ray.get_runtime_context().gcs_address}; workers' logs under {_session_dir()}")
    return ray.cluster_resources()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_api_reachable() -> bool:
    """Whether Ray's State API answers as the cluster's workers would ask it (it needs the cluster's
    dashboard; on a joined cluster with several Ray instances on this machine it cannot tell which
    one to ask, unless RAY_ADDRESS or RAY_API_SERVER_ADDRESS says so)."""
    try:
        from ray.util.state import list_actors

        list_actors(address=_API_SERVER if local_cores() else None, limit=1, timeout=10, raise_on_missing_output=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means the cleaner's query fails the same way
        return False


def local_cores() -> Optional[int]:
    """The machine's cores when this process started Ray itself (its logical CPUs overstate them), else None."""
    return _LOCAL_CORES if ray.is_initialized() else None


def _session_dir() -> str:
    try:
        from ray._private.worker import _global_node

        return os.path.join(_global_node.get_session_dir_path(), "logs")
    except Exception:  # noqa: BLE001 - a private API: the path is a courtesy in the log file
        return "the Ray session's logs directory"


def default_device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
