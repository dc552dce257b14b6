"""`bridgerec data prepare`: prepare (or reuse) the configured dataset directory."""

from __future__ import annotations

from bridgerec.config import Config
from bridgerec.console import say
from bridgerec.data.dataset import DatasetDir
from bridgerec.data.prepare import prepare_dataset
from bridgerec.runtime import init_ray

__all__ = ["prepare"]


def prepare(cfg: Config, log=say) -> DatasetDir:
    init_ray(cfg.ray)
    return DatasetDir(prepare_dataset(cfg.data, cfg.dataset_dir(), log=log).path)
