"""Every shipped alignment-method config loads, names the command that runs it, and builds its method."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from bridgerec.config import load_config
from bridgerec.methods import build_method
from bridgerec.models import build_model

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for pattern in ("rlmrec_con_*.yaml", "rlmrec_gen_*.yaml", "darec_*.yaml")
    for p in glob.glob(os.path.join(ROOT, "jobs", "configs", pattern))
)


def test_every_combination_is_shipped():
    names = {os.path.basename(p) for p in CONFIGS}
    assert names == {f"{m}_{d}_{s}.yaml" for m in ("rlmrec_con", "rlmrec_gen", "darec")
                     for d in ("lightgcn", "mf") for s in ("synthetic", "movielens")}


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_config(path):
    full = os.path.join(ROOT, path)
    with open(full) as fh:
        first = fh.readline().strip()
    assert first.startswith(f"# bridgerec train --config {path}")
    cfg = load_config(full)
    method, model, source = os.path.basename(path)[: -len(".yaml")].rsplit("_", 2)
    assert cfg.method.name == method.replace("_", "-") and cfg.model.name == model and cfg.data.source.kind == source
    if source == "movielens":
        assert cfg.data.source.path == "/data/ml-1m"
    rng = np.random.default_rng(0)
    inputs = {"user_semantic": rng.normal(size=(6, 4)).astype(np.float32), "item_semantic": rng.normal(size=(5, 4)).astype(np.float32),
              "train_interactions": np.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 0]])}
    m = build_method(cfg.method, build_model(cfg.model, 6, 5, train_pairs=tuple(inputs["train_interactions"])), inputs)
    assert set(cfg.method.loss_weights) <= {"rec", "align", "recon", "rec_shared", "orth", "shared", "global", "local"}
    assert m.name == cfg.method.name
