"""Quality floors on the ``small`` synthetic preset (fixed seed): each collaborative model beats
popularity on the test split by a margin a training regression would break, and 2-worker DDP
reaches the 1-worker result. Margins are set from measured runs (see the figures in each test)
with room for run-to-run noise across machines (the runs are reproducible on one machine)."""

from __future__ import annotations

import pytest

from bridgerec.config import load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import evaluate_split, popularity_scores
from bridgerec.training import train
from bridgerec.workflows import evaluate_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def small_dataset(ray_session, session_dir):
    from bridgerec.data.prepare import prepare_dataset

    cfg = load_config(None, [f"work_dir={session_dir}/work", "data.name=synthetic-small", "data.source.synthetic.preset=small"])
    return DatasetDir(prepare_dataset(cfg.data, cfg.dataset_dir(), log=lambda m: None).path)


@pytest.fixture(scope="session")
def popularity_r20(small_dataset):
    cfg = load_config(None, [])
    pop = popularity_scores(small_dataset.pairs("train"), small_dataset.n_items)
    return evaluate_split(lambda u: pop.expand(len(u), -1), small_dataset, cfg.eval, "test").overall["recall@20"]


def _test_r20(session_dir, data, name, *extra):
    cfg = load_config(None, [
        f"work_dir={session_dir}/work", "data.name=synthetic-small", "data.source.synthetic.preset=small",
        "tracking.enabled=false", f"run_name=quality-{name}", "train.log_every_steps=0", *extra,
    ])
    res = train(cfg, data)
    return evaluate_model(res.model, data, cfg.eval, "test").overall["recall@20"], res  # SASRec: + valid history


MF = ("model.name=mf", "model.dim=64", "train.epochs=12", "train.batch_size=1024", "train.lr=0.005", "train.patience=3")


def test_mf_beats_popularity_and_two_workers_match_one(session_dir, small_dataset, popularity_r20):
    one, _ = _test_r20(session_dir, small_dataset, "mf-1w", *MF, "train.num_workers=1", "train.batch_size=2048")
    two, res = _test_r20(session_dir, small_dataset, "mf-2w", *MF, "train.num_workers=2")
    assert one > popularity_r20 * 1.25, (one, popularity_r20)
    assert two > popularity_r20 * 1.25, (two, popularity_r20)
    assert abs(two - one) < 0.15 * one, f"2 workers {two:.4f} vs 1 worker {one:.4f} (same global batch)"
    assert all(h["ranks_in_sync"] == 1.0 for h in res.history)


LIGHTGCN = ("model.name=lightgcn", "model.dim=64", "train.epochs=12", "train.batch_size=1024", "train.lr=0.005",
            "train.patience=3")


@pytest.fixture(scope="module")
def lightgcn_small(session_dir, small_dataset):
    """(test Recall@20, trained method) of LightGCN on the small preset; BDLM starts from it."""
    return _test_r20(session_dir, small_dataset, "lightgcn", *LIGHTGCN)


def test_lightgcn_beats_popularity(lightgcn_small, popularity_r20):
    r20, _ = lightgcn_small
    assert r20 > popularity_r20 * 1.6, (r20, popularity_r20)


def test_bdlm_keeps_what_its_pretrained_lightgcn_knows(session_dir, small_dataset, popularity_r20, lightgcn_small,
                                                       tmp_path_factory):
    """BDLM (tiny backbone) preloaded from the trained LightGCN, one joint epoch on 2 workers (ZeRO-2)."""
    import numpy as np

    base_r20, base = lightgcn_small
    npz = tmp_path_factory.mktemp("bdlm-quality") / "lightgcn.npz"
    users, items = (t.numpy() for t in base.model.export_embeddings())
    np.savez(npz, user_emb=users, item_emb=items)
    r20, res = _test_r20(session_dir, small_dataset, "bdlm-lightgcn", *LIGHTGCN, "method.name=bdlm",
                         f"method.bdlm.domain_run={npz}", "method.bdlm.llm_samples=64", "method.bdlm.llm_lr=0.0003",
                         "llm.model=tiny", "train.epochs=1", "train.strategy=deepspeed", "train.zero_stage=2",
                         "train.num_workers=2")
    # measured: popularity 0.1128, LightGCN 0.2331, BDLM after one joint epoch 0.2154 (1.91x popularity,
    # 0.92x its LightGCN: the joint epoch costs a little, see bench_results/bdlm.md); a broken preload or
    # domain init (the run then starts far from the trained LightGCN) falls below both floors
    assert r20 > popularity_r20 * 1.7, (r20, popularity_r20)
    assert r20 > base_r20 * 0.88, (r20, base_r20)


def test_sasrec_beats_popularity_under_leave_last_out(session_dir, small_dataset, popularity_r20):
    assert small_dataset.manifest["split"]["protocol"] == "leave_last_out"
    # measured: popularity 0.1128; SASRec 0.1925 after 8 epochs at lr 0.005 (validation flat for 3
    # epochs, then rising), tested on the train + validation history
    r20, _ = _test_r20(session_dir, small_dataset, "sasrec", "model.name=sasrec", "model.dim=64", "train.epochs=7",
                       "train.batch_size=512", "train.lr=0.005", "train.patience=0", "model.max_seq_len=50")
    assert r20 > popularity_r20 * 1.3, (r20, popularity_r20)
