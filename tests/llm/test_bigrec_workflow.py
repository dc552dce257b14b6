"""BIGRec end to end on the tiny world: LoRA tuning on Ray Train, generation through the suite's
vLLM engine, grounding to real items, gamma chosen on validation, and the results it reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgerec.config import Config


@pytest.fixture(scope="module")
def bigrec_cfg(llm_config):
    return Config.model_validate({
        **llm_config.model_dump(), "run_name": "bigrec-workflow", "tracking": {"enabled": False},
        "method": {"name": "bigrec", "bigrec": {"train_samples": 64, "history_len": 5, "max_length": 96,
                                                "max_new_tokens": 16, "gammas": [0.0, 1.0, 8.0]}},
        "train": {**llm_config.train.model_dump(), "num_workers": 2, "strategy": "ddp", "batch_size": 8, "epochs": 1,
                  "lr": 3e-3},
        "eval": {**llm_config.eval.model_dump(), "ks": [10, 20]},
    })


@pytest.fixture(scope="module")
def outcome(ray_session, bigrec_cfg, dataset, vllm_engine):
    from bridgerec.workflows.bigrec import run_bigrec

    lines = []
    return run_bigrec(bigrec_cfg, dataset, log=lines.append, engine=vllm_engine), lines


def test_generations_are_grounded_to_real_items_with_history_excluded(outcome, bigrec_cfg, dataset):
    from bridgerec.evaluation import full_ranking
    from bridgerec.methods import build_method
    from bridgerec.methods.bigrec import embed_for_grounding
    from bridgerec.methods.bigrec_core import popularity_prior
    from bridgerec.models import build_model_for_dataset

    res, lines = outcome
    test_users = np.unique(dataset.pairs("test")[0])
    titles = res.generated["test"]
    assert len(titles) == len(test_users) and any(t.strip() for t in titles)
    # rebuild the grounding from what the run generated, and rank with the known items masked
    items = dataset.items().sort_values("iid")["title"].astype(str).tolist()
    method = build_method(bigrec_cfg.method, build_model_for_dataset(bigrec_cfg.model, dataset), {})
    method.set_grounding(embed_for_grounding(items, "encoder", bigrec_cfg.encoder),
                         popularity_prior(dataset.pairs("train")[1], dataset.n_items))
    method.set_generated(test_users, embed_for_grounding(titles, "encoder", bigrec_cfg.encoder))
    method.gamma = res.gamma
    known_u = np.concatenate([dataset.pairs("train")[0], dataset.pairs("valid")[0]])
    known_i = np.concatenate([dataset.pairs("train")[1], dataset.pairs("valid")[1]])
    scores = method.full_scores(torch.as_tensor(test_users))
    scores[torch.as_tensor(np.searchsorted(test_users, known_u[np.isin(known_u, test_users)])),
           torch.as_tensor(known_i[np.isin(known_u, test_users)])] = -torch.inf
    top = torch.topk(scores, 20, dim=1).indices.numpy()
    assert ((top >= 0) & (top < dataset.n_items)).all()
    known = set(zip(known_u.tolist(), known_i.tolist()))
    assert not any((int(u), int(i)) in known for u, row in zip(test_users, top) for i in row)
    # the same scores give the reported test metrics
    again = full_ranking(method.full_scores, dataset.n_users, dataset.n_items, dataset.pairs("train"), dataset.pairs("test"),
                         [10, 20], exclude=dataset.pairs("valid"))
    assert again.overall["recall@20"] == pytest.approx(res.test.overall["recall@20"], abs=1e-9)


def test_gamma_search_and_report(outcome, bigrec_cfg):
    res, lines = outcome
    assert set(res.gamma_table) == {0.0, 1.0, 8.0} and res.gamma in res.gamma_table
    assert res.gamma_table[res.gamma] == max(res.gamma_table.values())
    assert res.valid.overall["recall@20"] == pytest.approx(res.gamma_table[res.gamma])  # the chosen gamma's validation score
    assert res.sft["history"][0]["frozen_unchanged"] == 1.0
    for split, v in res.validity.items():
        assert v.n == len(res.generated[split]) and 0.0 <= v.exact <= 1.0 and 0.0 <= v.near <= 1.0
    assert res.users_per_s["test"] > 0
    assert any(line.startswith("[bigrec] gamma") for line in lines)
    from bridgerec.workflows.bigrec import summary_lines

    text = "\n".join(summary_lines(res, bigrec_cfg))
    assert "known items masked" in text and "users/s" in text


@pytest.mark.slow
def test_quality_popularity_reweighting_beats_grounding_alone(ray_session, bigrec_cfg, dataset):
    """The tuned tiny backbone on every window of the tiny world (2 epochs), generation with
    transformers: the reweighted ranking beats its ablation (gamma 0, grounding alone) on test
    Recall@20. Measured +0.079 and +0.071 (seeds 0, 1: 0.218 vs 0.139, 0.239 vs 0.168); pinned at +0.03."""
    from bridgerec.workflows.bigrec import run_bigrec

    cfg = Config.model_validate({
        **bigrec_cfg.model_dump(), "run_name": "bigrec-quality",
        "method": {"name": "bigrec", "bigrec": {"train_samples": None, "history_len": 10, "max_length": 128,
                                                "max_new_tokens": 24}},
        "llm": {**bigrec_cfg.llm.model_dump(), "engine": "hf"},
        "train": {**bigrec_cfg.train.model_dump(), "batch_size": 16, "epochs": 2, "lr": 2e-3},
    })
    res = run_bigrec(cfg, dataset, log=lambda m: None)
    full, ablation = res.test.overall["recall@20"], res.test_grounding.overall["recall@20"]
    assert full - ablation >= 0.03, (full, ablation, res.gamma)
    assert res.gamma > 0
