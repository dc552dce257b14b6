"""Llama4Rec's rating task on the tiny world: the rating prompts read only what is known before the
event they rate, the tuned tiny LLM's answers parse to ratings on the scale, the blend with the
rating domain model is chosen on validation RMSE, and `bridgerec train` prints the RMSE/MAE table."""

from __future__ import annotations

import numpy as np
import pytest

from bridgerec.config import Config


def _triples(dataset, split):
    from bridgerec.evaluation.ratings import rating_triples

    return rating_triples(dataset, split)


@pytest.fixture(scope="module")
def rating_domain(dataset, tmp_path_factory):
    """A rating domain model with signal: the baseline predictor mu + b_u + b_i of the training
    ratings, as vectors whose inner product is the prediction ([mu + b_u, 1] . [1, b_i])."""
    u, i, r = _triples(dataset, "train")
    mu = r.mean()
    b_i = np.bincount(i, r - mu, dataset.n_items) / np.maximum(np.bincount(i, minlength=dataset.n_items) + 5, 1)
    b_u = np.bincount(u, r - mu - b_i[i], dataset.n_users) / np.maximum(np.bincount(u, minlength=dataset.n_users) + 5, 1)
    users = np.stack([mu + b_u, np.ones(dataset.n_users)], 1).astype(np.float32)
    items = np.stack([np.ones(dataset.n_items), b_i], 1).astype(np.float32)
    path = tmp_path_factory.mktemp("llama4rec-rating") / "domain.npz"
    np.savez(path, user_emb=users, item_emb=items)
    return str(path)


@pytest.fixture(scope="module")
def rating_cfg(llama4rec_cfg, rating_domain):
    c = llama4rec_cfg.model_dump()
    c["method"]["llama4rec"].update({"task": "rating", "domain_run": rating_domain, "train_samples": 160,
                                     "history_len": 5})
    c["run_name"] = "llama4rec-rating"
    return Config.model_validate(c)


def test_rating_prompts_read_only_what_is_known_before_the_event(rating_cfg, dataset):
    from bridgerec.llm.prompts import ItemView
    from bridgerec.workflows.llama4rec_rating import _examples, _prompts

    titles = dataset.items().sort_values("iid")["title"].tolist()
    view = lambda i: ItemView(int(i), str(titles[int(i)]))  # noqa: E731
    known = {s: {(int(u), int(i)): r for u, i, r in zip(*_triples(dataset, s))} for s in ("train", "valid", "test")}
    examples = _examples(rating_cfg, dataset, view, (1.0, 5.0))
    assert len(examples) == 160
    for p in examples:  # the answer is a training rating, the history training ratings before it
        assert known["train"][(p.uid, p.iid)] == p.target and p.iid not in p.history
        assert all(known["train"][(p.uid, h)] == r for h, r in zip(p.history, p.ratings))
        assert f'Item: "{titles[p.iid]}"' in p.text and "from 1 to 5" in p.text
    for split, visible in (("valid", ("train",)), ("test", ("train", "valid"))):
        prompts = _prompts(rating_cfg, dataset, split, view, (1.0, 5.0))
        u, i, _ = _triples(dataset, split)
        assert [(p.uid, p.iid) for p in prompts] == list(zip(u.tolist(), i.tolist()))
        for p in prompts:
            assert p.history and len(p.history) <= 5
            for h, r in zip(p.history, p.ratings):  # shown ratings were known then; the event's own never is
                assert any(known[s].get((p.uid, h)) == r for s in visible)
            assert f"(rating {p.ratings[-1]:g})" in p.text


def test_parse_rating_reads_the_first_number_on_the_scale():
    from bridgerec.methods.llama4rec_core import parse_rating

    assert parse_rating(" 4", 1, 5) == 4.0 and parse_rating("3.5 stars\n2", 1, 5) == 3.5
    assert parse_rating(" 9", 1, 5) is None and parse_rating("four", 1, 5) is None and parse_rating("", 1, 5) is None


@pytest.fixture(scope="module")
def rated(ray_session, rating_cfg, dataset):
    from bridgerec.workflows.llama4rec_rating import run_llama4rec_rating

    lines = []
    return run_llama4rec_rating(rating_cfg, dataset, log=lines.append), lines


@pytest.mark.slow
def test_the_tuned_llm_rates_on_the_scale_and_the_blend_is_chosen_on_validation(rated, rating_cfg, dataset):
    res, lines = rated
    assert all(h["frozen_unchanged"] == 1.0 for h in res.sft["history"])
    assert res.answers["test"].parse_rate >= 0.9, res.answers["test"].raw[:10]  # measured: 1.0
    values = res.answers["test"].values[np.isfinite(res.answers["test"].values)]
    assert ((values >= 1) & (values <= 5)).all()
    rows = list(res.ratings.items())
    assert rows[0][0].startswith("global mean") and rows[-1][0].startswith("llama4rec")
    base, domain, llm, blend = (r for _, r in rows)
    # measured (test RMSE): global mean 1.3379, domain 1.3646, LLM alone 1.7758, blend 1.3586: the
    # tiny LLM alone is far off, and the blend chosen on validation keeps the domain model's level
    assert blend["rmse"] < llm["rmse"] - 0.2 and blend["rmse"] <= domain["rmse"] + 0.01
    assert min(res.table.values()) == pytest.approx(res.valid["rmse"])  # lowest validation RMSE chosen
    assert len(res.table) == 9 and any("chosen on validation RMSE" in ln for ln in lines)


@pytest.mark.slow
def test_train_prints_the_rating_table_for_the_rating_task(rated, rating_cfg, dataset, capsys):
    from bridgerec.workflows.evaluate import popularity_baseline
    from bridgerec.workflows.llm_methods import llm_workflow
    from bridgerec.workflows.train import RunSummary, print_summary

    res, _ = rated
    wf = llm_workflow(rating_cfg)
    summary = RunSummary(None, "", res.test, popularity_baseline(dataset, rating_cfg.eval, "test"), dataset, 1.0,
                         res.adapter_dir, rows=wf.test_rows(res), notes=wf.summary_lines(res, rating_cfg),
                         ratings=wf.ratings(res))
    print_summary(rating_cfg, summary, "train")
    out = capsys.readouterr().out + capsys.readouterr().err
    assert "rmse" in out.lower() and "LLM alone (alpha 1)" in out and "parsed" in out


def test_a_sweep_over_the_rating_task_is_refused(rating_cfg, tmp_path):
    from bridgerec.config import ConfigError
    from bridgerec.workflows.tune import run_tune

    cfg = rating_cfg.model_copy(deep=True)
    cfg.tracking.enabled = True
    space = tmp_path / "space.yaml"
    space.write_text("params: {method.llama4rec.history_len: {choice: [3, 5]}}\n")
    with pytest.raises(ConfigError, match="task=rating"):
        run_tune(cfg, str(space))
