"""Starting or joining Ray, and choosing devices from what the machine has."""

from __future__ import annotations

import logging
import os

import ray

from bridgerec.config import RayConfig

__all__ = ["init_ray", "default_device"]


def init_ray(cfg: RayConfig | None = None) -> dict:
    """Join ``cfg.address`` / ``RAY_ADDRESS`` if given, else start a local Ray.

    A local Ray gets more logical CPUs than cores (``max(8, cores)``) so that small actors
    (Serve ingress, Data actors) schedule beside 2 training workers on a 2-core machine.
    Returns the cluster resources.
    """
    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return ray.cluster_resources()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    common = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **common)
    else:
        num_cpus = cfg.num_cpus or max(8, os.cpu_count() or 1)
        ray.init(num_cpus=num_cpus, **common)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(int(os.environ.get("BRIDGEREC_PROGRESS_BARS", "0")))
    return ray.cluster_resources()


def default_device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
