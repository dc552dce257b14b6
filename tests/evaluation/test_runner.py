"""evaluate_split on a prepared dataset: cut-offs larger than the catalogue are a config error."""

from __future__ import annotations

import pytest
import torch

from bridgerec.config import ConfigError, EvalConfig
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import check_eval_ks, evaluate_split


def test_check_eval_ks_names_the_key_and_the_catalogue():
    check_eval_ks(EvalConfig(ks=[5, 10]), n_items=10)  # K == catalogue is fine
    with pytest.raises(ConfigError, match=r"eval\.ks: \[20, 50\] larger than the catalog of 10 items"):
        check_eval_ks(EvalConfig(ks=[5, 20, 50]), n_items=10)


def test_evaluate_split_rejects_k_beyond_catalogue(tiny_dataset):
    data = DatasetDir(tiny_dataset)
    scores = lambda u: torch.zeros(len(u), data.n_items)  # noqa: E731
    ok = evaluate_split(scores, data, EvalConfig(ks=[data.n_items]), "valid")
    assert f"recall@{data.n_items}" in ok.overall
    with pytest.raises(ConfigError, match=rf"eval\.ks: \[{data.n_items + 1}\] larger than the catalog of {data.n_items} items"):
        evaluate_split(scores, data, EvalConfig(ks=[10, data.n_items + 1]), "test")
