"""Starting or joining Ray, and choosing devices from what the machine has."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import ray

from bridgerec import console

__all__ = ["init_ray", "local_cores", "default_device"]

_LOCAL_CORES: Optional[int] = None  # set when this process started Ray itself


def init_ray(cfg: Any = None, *, address: Optional[str] = None, num_cpus: Optional[int] = None) -> dict:
    """Join ``cfg.address`` / ``address`` / ``RAY_ADDRESS`` if given, else start a local Ray.

    ``cfg`` is anything with ``address`` and ``num_cpus`` attributes (the root config's ``ray``
    section, :class:`bridgerec.config.RayConfig`); this leaf module takes plain values so that
    it never imports the config.

    A local Ray gets more logical CPUs than cores (``max(8, cores)``) so that small actors
    (Serve ingress, Data actors) schedule beside 2 training workers on a 2-core machine.
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
    common = dict(include_dashboard=False, logging_level=logging.INFO, log_to_driver=loud)
    if address:
        ray.init(address=address, **common)
    else:
        global _LOCAL_CORES
        num_cpus = num_cpus or max(8, os.cpu_count() or 1)
        ray.init(num_cpus=num_cpus, **common)
        _LOCAL_CORES = os.cpu_count() or 1
    ctx = ray.data.DataContext.get_current()  # importing ray.data configures its loggers
    ctx.enable_progress_bars = bool(int(os.environ.get("BRIDGEREC_PROGRESS_BARS", "0")))
    console.quiet_libraries()
    console.detail(f"ray: {ray.get_runtime_context().gcs_address}; workers' logs under {_session_dir()}")
    return ray.cluster_resources()


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
