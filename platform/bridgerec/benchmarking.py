"""Helpers for the benchmark scripts under ``jobs/bench/``: peak-memory sampling of a Ray run."""

from __future__ import annotations

import os
import threading
from typing import Callable

import psutil

__all__ = ["PeakSampler", "driver_and_workers_rss", "ray_workers_rss", "write_report"]


class PeakSampler:
    """Polls ``measure()`` (bytes) in a daemon thread and keeps the peak."""

    def __init__(self, measure: Callable[[], int], interval_s: float = 0.2):
        self.measure, self.interval_s, self.peak = measure, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure())


def _is_ray_worker(proc: psutil.Process) -> bool:
    """Worker processes are titled ``ray::<task or IDLE>``; the agents are not workers."""
    name = proc.name()
    return name.startswith("ray::") and not name.endswith("Agent")


def driver_and_workers_rss() -> int:
    """Summed RSS of this process and the Ray workers of the local cluster it started."""
    me = psutil.Process()
    total = me.memory_info().rss
    for proc in me.children(recursive=True):
        try:
            if _is_ray_worker(proc):
                total += proc.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def ray_workers_rss(title: str) -> int:
    """Summed RSS of this process's Ray worker processes whose title contains ``title``
    (e.g. ``RayTrainWorker``)."""
    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if title in proc.name() or title in " ".join(proc.cmdline()[:1]):
                total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def write_report(text: str, out: str) -> None:
    """Print a benchmark's markdown report and write it to ``out`` (folders created)."""
    print()
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        fh.write(text)
    print(f"written to {out}")
