"""Llama4Rec's sequential task: SASRec as the domain model. Every prompt's user vector is SASRec's
embedding of the history that prompt knows (never one holding its target or held-out item), the
held-out candidates are SASRec's own top items at the split's time, the domain-order row is
SASRec's own test protocol, and the loader takes a sequence run for llama4rec while bigrec still
refuses it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

MAX_LEN = 6


@pytest.fixture(scope="module")
def sasrec(dataset):
    """A small SASRec trained in-process for a few full-batch steps on the training events."""
    from bridgerec.models import ModelConfig, build_model_for_dataset
    from bridgerec.models.sasrec import build_sequences

    torch.manual_seed(0)
    model = build_model_for_dataset(ModelConfig(name="sasrec", dim=16, n_heads=2, n_layers=1, max_seq_len=MAX_LEN,
                                                dropout=0.0), dataset)
    indptr, items = model.histories
    uids = np.repeat(np.arange(dataset.n_users), np.diff(indptr))  # one row per training event
    positions = np.arange(len(items)) - indptr[uids]
    keep = positions > 0  # (an event with nothing before it has no input)
    batch = {"seq": build_sequences((indptr, items), uids[keep], positions[keep], MAX_LEN),
             "pos": torch.as_tensor(items[keep])}
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def bundles(sasrec, dataset, tmp_path_factory):
    """``recommender``: the run's pyfunc layout (``artifacts/`` with the embeddings exported on
    every known event, the description and the weights, written by the logging code's
    :func:`save_domain_model`); ``model``: the run's ``model/`` artifacts (no weights)."""
    import yaml

    from bridgerec.models import SERVING_HISTORY, conditioned_on, histories_for
    from bridgerec.models.snapshot import save_domain_model

    root = tmp_path_factory.mktemp("sasrec-run")
    art, model_dir = root / "recommender" / "artifacts", root / "model"
    art.mkdir(parents=True)
    model_dir.mkdir()
    full = histories_for(dataset, SERVING_HISTORY)
    with conditioned_on(sasrec, full):
        users, items = (t.numpy() for t in sasrec.export_embeddings())
    for d in (art, model_dir):
        np.save(d / "user_embeddings.npy", users)
        np.save(d / "item_embeddings.npy", items)
    assert save_domain_model(str(art), sasrec, users, full).get("domain_model_weights")
    with open(model_dir / "config.yaml", "w") as fh:
        yaml.safe_dump({"model": {"name": "sasrec"}}, fh)
    return {"recommender": str(root / "recommender"), "model": str(model_dir)}


@pytest.fixture(scope="module")
def seq_cfg(llama4rec_cfg, bundles):
    cfg = llama4rec_cfg.model_copy(deep=True)
    cfg.method.llama4rec.domain_run = bundles["recommender"]
    cfg.method.llama4rec.tune = False
    return cfg


class Recorder:
    """A history model that records every history it is asked to embed."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def embed_histories(self, histories):
        self.calls.append([list(map(int, h)) for h in histories])
        return self.model.embed_histories(histories)

    def item_embeddings(self):
        return self.model.item_embeddings()


def _rows(indptr, items):
    return [items[indptr[u]:indptr[u + 1]].tolist() for u in range(len(indptr) - 1)]


def _by_user(dataset, split):
    from support_data import items_by_user

    return items_by_user(dataset, split)


def _view(dataset):
    from bridgerec.llm.prompts import ItemView

    titles = [str(t) for t in dataset.items().sort_values("iid")["title"].tolist()]
    return lambda i: ItemView(int(i), titles[int(i)])


def test_the_loader_takes_a_sequence_run_for_llama4rec_and_bigrec_still_refuses_it(seq_cfg, dataset, bundles, sasrec):
    from bridgerec.config import ConfigError
    from bridgerec.methods.llama4rec_domain import HistoryDomain
    from bridgerec.workflows.bigrec import _domain_embeddings
    from bridgerec.workflows.llama4rec import load_domain
    from bridgerec.workflows.llm_methods import load_domain_run, open_domain_run

    domain = load_domain(seq_cfg, dataset)
    assert isinstance(domain, HistoryDomain) and domain.conditions_on_history
    np.testing.assert_array_equal(domain.item_emb, sasrec.item_embeddings().detach().numpy())
    probe = [[3, 1, 4], [5]]
    with torch.no_grad():
        np.testing.assert_array_equal(domain.user_vectors([0, 1], probe), sasrec.embed_histories(probe).numpy())
    for src in bundles.values():  # the refusal reads the description, or the config of a model/ folder
        with pytest.raises(ConfigError, match="sequence model"):
            load_domain_run(seq_cfg, dataset, src, "method.bigrec.domain_run")
    bigrec = seq_cfg.model_copy(deep=True)
    bigrec.method.bigrec.domain_run = bundles["recommender"]
    with pytest.raises(ConfigError, match="method.bigrec.domain_run.*sequence model"):
        _domain_embeddings(bigrec, dataset, lambda m: None)  # bigrec reads the domain run through load_domain_run
    # a run's model/ artifacts hold no weights: the error names what to give instead
    with pytest.raises(ConfigError, match="without its weights.*models:/"):
        open_domain_run(seq_cfg, dataset, bundles["model"], "method.llama4rec.domain_run", sequence_ok=True)


def test_no_prompt_embeds_a_history_holding_its_target_or_heldout_item(seq_cfg, dataset, sasrec):
    """Training examples embed the training items before the target; held-out prompts (and the
    scores evaluation reads) the history known at the split's time; similar users the training
    histories. Recorded at the model, so nothing else can have been embedded."""
    from bridgerec.methods import build_method
    from bridgerec.methods.llama4rec_domain import HistoryDomain
    from bridgerec.models import build_model_for_dataset, histories_for, known_at
    from bridgerec.workflows.llama4rec import _score_at, heldout, instruction_prompts

    from support_data import TrainOnly

    train = histories_for(dataset, ("train",))
    train_rows = _rows(*train)
    rec = Recorder(sasrec)
    domain = HistoryDomain(rec, train)
    prompts = instruction_prompts(seq_cfg, TrainOnly(dataset, "the instruction data"), domain, _view(dataset))
    assert rec.calls[0] == train_rows  # similar users: each user's training history
    assert len(rec.calls) == 2 and len(rec.calls[1]) == len(prompts) == 160
    for p, embedded in zip(prompts, rec.calls[1]):
        assert embedded == train_rows[p.uid][:-1] and p.target == train_rows[p.uid][-1] and p.target not in embedded
        assert list(p.history) == embedded[-len(p.history):]

    held = {s: _by_user(dataset, s) for s in ("valid", "test")}
    method = build_method(seq_cfg.method, build_model_for_dataset(seq_cfg.model, dataset), {})
    for split in ("valid", "test"):
        rec.calls.clear()
        prompts = heldout(seq_cfg, dataset, domain, split)
        _score_at(method, domain, dataset, split)
        known = _rows(*known_at(dataset, split))
        assert rec.calls == [known, known]  # the prompts' vectors, then evaluation's (similar users: cached)
        for p in prompts:
            assert not set(known[p.uid]) & held[split][p.uid], (split, p.uid)
            assert list(p.history) == known[p.uid][-len(p.history):]
        assert {p.uid for p in prompts} == set(held[split])
    if split == "test":  # test prompts know the validation item (leave-last-out: the last one)
        valid = held["valid"]
        assert all(valid[p.uid] <= set(known[p.uid]) for p in prompts if p.uid in valid)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_heldout_candidates_are_sasrecs_top_items_at_the_splits_time(seq_cfg, dataset, sasrec, split):
    from bridgerec.methods.llama4rec_data import top_n
    from bridgerec.models import conditioned_on, known_at
    from bridgerec.workflows.llama4rec import heldout, load_domain

    prompts = heldout(seq_cfg, dataset, load_domain(seq_cfg, dataset), split)
    indptr, items = known_at(dataset, split)
    uids = torch.as_tensor([p.uid for p in prompts])
    with conditioned_on(sasrec, (indptr, items)), torch.no_grad():
        scores = sasrec.full_scores(uids).numpy()  # SASRec's own scoring at the split's time
    for row, u in enumerate(uids.tolist()):
        scores[row, items[indptr[u]:indptr[u + 1]]] = -np.inf
    expected = top_n(scores, seq_cfg.method.llama4rec.n_candidates)
    assert [list(p.domain) for p in prompts] == expected.tolist()
    # the exported vectors (every known item) would have given other candidates
    users = np.load(os.path.join(seq_cfg.method.llama4rec.domain_run, "artifacts", "user_embeddings.npy"))
    leaky = users[uids.numpy()] @ sasrec.item_embeddings().detach().numpy().T
    assert not np.allclose(leaky, np.where(np.isinf(scores), leaky, scores), atol=1e-4)


@pytest.mark.slow
def test_a_sequential_run_reports_the_three_rows_and_its_domain_row_is_sasrecs_own(seq_cfg, dataset, sasrec, hf_engine):
    """``tune: false``: the base tiny backbone (the session's transformers engine) reranks SASRec's
    candidates; the domain-order row equals SASRec evaluated by `bridgerec evaluate`'s protocol."""
    from bridgerec.workflows.evaluate import evaluate_model
    from bridgerec.workflows.llama4rec import run_llama4rec

    lines = []
    res = run_llama4rec(seq_cfg, dataset, log=lines.append, engine=hf_engine)
    assert res.test is not None and res.test_domain is not None and res.test_llm is not None
    assert res.adapter_dir is None and not res.sft["history"]
    assert any("a sequence model" in line for line in lines)
    own = evaluate_model(sasrec, dataset, seq_cfg.eval, "test")
    for k, v in own.overall.items():
        assert res.test_domain.overall[k] == pytest.approx(v, abs=1e-9), k
    # only the candidates' order changes: beyond them every row is SASRec's
    assert res.test_llm.overall["recall@20"] == pytest.approx(own.overall["recall@20"])
    assert res.test.overall["hr@5"] == pytest.approx(own.overall["hr@5"])
    assert set(res.rankings) == {"valid", "test"} and all(r.parse_rate >= 0 for r in res.rankings.values())


def test_a_registered_sasrec_recommender_is_the_documented_domain_run(seq_cfg, dataset, sasrec, tmp_path):
    """``models:/NAME@alias`` of a logged SASRec recommender (the shipped config's domain_run) opens
    as a history model with SASRec's weights; the run's model/ artifacts would not."""
    import mlflow

    from bridgerec.methods.llama4rec_domain import HistoryDomain
    from bridgerec.tracking.pyfunc import log_pyfunc_model
    from bridgerec.workflows.llama4rec import load_domain

    cfg = seq_cfg.model_copy(deep=True)
    cfg.retrieval.grounding_index = False
    cfg.tracking.uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_experiment("llama4rec-sequential-domain")
    with mlflow.start_run():
        log_pyfunc_model(sasrec, dataset, cfg, "sasrec-domain", alias="champion")
    cfg.method.llama4rec.domain_run = "models:/sasrec-domain@champion"
    domain = load_domain(cfg, dataset)
    assert isinstance(domain, HistoryDomain)
    probe = [[2, 7, 1], [4]]
    with torch.no_grad():
        np.testing.assert_array_equal(domain.user_vectors([0, 1], probe), sasrec.embed_histories(probe).numpy())
