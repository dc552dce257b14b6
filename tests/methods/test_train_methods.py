"""Every alignment method trains with the domain models on 2 Ray Train workers (one epoch on the
tiny synthetic data, DDP and one DeepSpeed ZeRO-2 case): each named loss is logged and finite, and
the domain model and every alignment module moved. Which parameters each loss moves (and that it
moves only those) is pinned at the module level in test_alignment.py."""

from __future__ import annotations

import math

import pytest
import torch

from bridgerec.config import load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.training import train
from bridgerec.training.driver import build_method_for_dataset

LOSSES = {
    "rlmrec-con": {"rec", "align"},
    "rlmrec-gen": {"rec", "recon"},
    "darec": {"rec", "rec_shared", "orth", "shared", "global", "local"},
}
CASES = [  # every method x every domain model; two of them under DeepSpeed
    ("rlmrec-con", "mf", "ddp"),
    ("rlmrec-con", "lightgcn", "ddp"),
    ("rlmrec-con", "sasrec", "ddp"),
    ("rlmrec-gen", "mf", "ddp"),
    ("rlmrec-gen", "lightgcn", "ddp"),
    ("rlmrec-gen", "sasrec", "deepspeed"),
    ("darec", "mf", "ddp"),
    ("darec", "lightgcn", "deepspeed"),
    ("darec", "sasrec", "ddp"),
]


def _group(name: str) -> str:
    parts = name.split(".")
    return "domain" if parts[0] == "domain" else ".".join(parts[:2])


@pytest.mark.parametrize("method,model,strategy", CASES, ids=[f"{a}-{m}-{s}" for a, m, s in CASES])
def test_method_trains_with_two_workers(ray_session, tiny_dataset, session_dir, method, model, strategy):
    cfg = load_config(None, [
        f"work_dir={session_dir}/work", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
        "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", f"model.name={model}", "model.dim=16",
        "model.max_seq_len=10", f"method.name={method}", "method.darec.kmeans_every=2", "train.batch_size=128",
        "train.epochs=1", "train.patience=0", f"train.strategy={strategy}", "train.zero_stage=2", "tracking.enabled=false",
        f"run_name=methods-{method}-{model}-{strategy}",
    ])
    data = DatasetDir(tiny_dataset)
    torch.manual_seed(cfg.train.seed)  # as every worker does before building the method
    init = {k: v.clone() for k, v in build_method_for_dataset(cfg, data).state_dict().items()}
    res = train(cfg, data)
    metrics = res.best_metrics
    logged = {k[len("loss_"):] for k in metrics if k.startswith("loss_")}
    assert logged == LOSSES[method]
    assert all(math.isfinite(metrics[f"loss_{name}"]) for name in logged), metrics
    assert 0.0 <= metrics["valid_recall_at_20"] <= 1.0
    trained = dict(res.model.named_parameters())
    groups = {_group(n) for n in trained}
    moved = {_group(n) for n, p in trained.items() if not torch.equal(p.detach(), init[n])}
    assert len(groups) > 1 and moved == groups, (groups, moved)
