"""A user sent with only a history, served from a SASRec bundle, gets SASRec's own forward pass
over that history (not the mean of the items' embeddings): a known user's full history searched
as history-only equals the known user, the vector equals the trained model's in-process encoder,
and a bundle without the weights falls back to the mean with one warning."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch

K = 10
MAX_LEN = 8


@pytest.fixture(scope="module")
def sasrec_run(ray_session, tiny_config, tmp_path_factory):
    from bridgerec.serving.bundle import bundle_dir, load_catalog
    from bridgerec.serving.search import DomainSearcher
    from bridgerec.workflows import train_and_log

    tmp = tmp_path_factory.mktemp("sequence-history")
    cfg = tiny_config.model_copy(deep=True)
    cfg.model.name, cfg.model.dim, cfg.model.n_heads, cfg.model.n_layers = "sasrec", 16, 2, 1
    cfg.model.max_seq_len = MAX_LEN  # shorter than many users' histories: the cut matters
    cfg.train.epochs, cfg.train.num_workers = 1, 1
    cfg.tracking.uri, cfg.tracking.experiment = f"sqlite:///{tmp}/mlflow.db", "sequence-history"
    cfg.retrieval.grounding_index = False
    summary = train_and_log(cfg, log=lambda m: None)
    root, version = bundle_dir(summary.model_uri, summary.tracking_uri, dst=str(tmp / "bundle"))
    return {"cfg": cfg, "summary": summary, "root": root, "catalog": load_catalog(root, version),
            "searcher": DomainSearcher(root)}


def _mean_query(searcher, history) -> np.ndarray:
    return searcher.item_emb[np.asarray(history, dtype=np.int64)].mean(0)


def test_known_history_as_history_only_equals_the_known_user(sasrec_run):
    searcher, catalog = sasrec_run["searcher"], sasrec_run["catalog"]
    assert searcher.history_model is not None and catalog.history_indptr is not None
    users = list(range(catalog.n_users))
    histories = [catalog.history(u).tolist() for u in users]
    assert max(len(h) for h in histories) > MAX_LEN
    as_known = searcher.search([(u, [], K, catalog.seen(u).tolist()) for u in users])
    as_history = searcher.search([(None, h, K, []) for h in histories])
    for u, (ids_k, s_k), (ids_h, s_h) in zip(users, as_known, as_history):
        assert ids_h == ids_k, u
        np.testing.assert_allclose(s_h, s_k, rtol=0, atol=1e-4)
    vectors = searcher.user_vectors([(None, h, K, []) for h in histories])
    np.testing.assert_allclose(vectors, searcher.user_emb, rtol=0, atol=1e-4)
    # the old query (mean of the history's item embeddings) ranks differently for many users
    mean = searcher.index.search(np.stack([_mean_query(searcher, h) for h in histories]).astype(np.float32), K,
                                 *_exclusions(histories))[0]
    differ = sum(list(m[m >= 0]) != ids for m, (ids, _) in zip(mean, as_history))
    assert differ > catalog.n_users // 4, differ


def _exclusions(histories) -> tuple[np.ndarray, np.ndarray]:
    excl = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
    indptr = np.zeros(len(excl) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in excl], out=indptr[1:])
    return indptr, np.concatenate(excl)


def test_served_vector_is_the_trained_models_forward_pass(sasrec_run):
    """Histories no user has (shuffled, cut, long, short, one item): the served vector is the
    trained model's encoder over the last ``max_seq_len`` items, left-padded, in the order sent."""
    from bridgerec.training.driver import load_model_from_checkpoint_dir

    cfg, summary, searcher = sasrec_run["cfg"], sasrec_run["summary"], sasrec_run["searcher"]
    domain = load_model_from_checkpoint_dir(cfg, summary.dataset, summary.checkpoint_dir).domain
    rng = np.random.default_rng(0)
    n_items = summary.dataset.n_items
    histories = [rng.choice(n_items, size=n, replace=False).tolist() for n in (1, 3, MAX_LEN, MAX_LEN + 5, 25)]
    histories.append(histories[-1][::-1])  # the same items in the other order
    seq = torch.zeros(len(histories), MAX_LEN, dtype=torch.int64)
    for row, h in enumerate(histories):
        tail = torch.as_tensor(h[-MAX_LEN:]) + 1
        seq[row, MAX_LEN - len(tail):] = tail
    with torch.no_grad():
        expected = domain.eval().encode(seq, stochastic=False)[:, -1].numpy()
    served = searcher.user_vectors([(None, h, K, []) for h in histories])
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(served[-1], served[-2], atol=1e-3)  # order matters, unlike the mean
    # batched with known users, the history-only rows are the same
    mixed = searcher.user_vectors([(0, [], K, []), *((None, h, K, []) for h in histories), (1, [], K, [])])
    np.testing.assert_allclose(mixed[1:-1], served, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(mixed[[0, -1]], searcher.user_emb[[0, 1]])


@pytest.mark.parametrize("remove", [["domain_model.pt"], ["domain_model.pt", "domain_model.json"]],
                         ids=["weights-missing", "logged-before-domain-model-json"])
def test_bundle_without_weights_falls_back_to_the_mean_with_one_warning(sasrec_run, tmp_path, caplog, remove):
    from bridgerec.serving.search import DomainSearcher

    root = str(tmp_path / "bundle")
    shutil.copytree(sasrec_run["root"], root)
    for name in remove:
        os.remove(os.path.join(root, name))
    with caplog.at_level(logging.WARNING, logger="bridgerec.serving.search"):
        searcher = DomainSearcher(root)
    warnings = [r for r in caplog.records if r.name == "bridgerec.serving.search"]
    assert len(warnings) == 1 and "conditions on histories" in warnings[0].getMessage()
    assert searcher.history_model is None
    history = sasrec_run["catalog"].history(3).tolist()
    np.testing.assert_allclose(searcher.user_vectors([(None, history, K, [])])[0], _mean_query(searcher, history),
                               rtol=1e-6)
