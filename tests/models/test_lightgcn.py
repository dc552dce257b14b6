"""LightGCN: exact normalized adjacency, propagation against a dense reference, eval cache,
training, and batch independence of full_scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgerec.config import ModelConfig
from bridgerec.models.lightgcn import LightGCN, normalized_adjacency

# 2 users, 3 items: u0-{i0, i1}, u1-{i1, i2}; (0, 0) repeated counts once.
PAIRS = (np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 2, 0]))
N_USERS, N_ITEMS = 7, 11
TRAIN = (np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2]), np.array([1, 2, 3, 4, 5, 6, 7, 8, 1, 9]))


def _model(n_layers=2, seed=0, **kw) -> LightGCN:
    torch.manual_seed(seed)
    return LightGCN(ModelConfig(name="lightgcn", dim=8, n_layers=n_layers, **kw), N_USERS, N_ITEMS, train_pairs=TRAIN)


def test_adjacency_exact_values():
    adj = normalized_adjacency(*PAIRS, n_users=2, n_items=3)
    assert adj.layout == torch.sparse_coo and adj.shape == (5, 5) and adj._nnz() == 8
    # degrees: u0 2, u1 2, i0 1, i1 2, i2 1 -> 1/sqrt(2*1) and 1/sqrt(2*2)
    h, q = 1 / np.sqrt(2), 0.5
    expected = np.array(
        [
            [0, 0, h, q, 0],
            [0, 0, 0, q, h],
            [h, 0, 0, 0, 0],
            [q, q, 0, 0, 0],
            [0, h, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(adj.to_dense().numpy(), expected, rtol=1e-6)


def test_isolated_nodes_get_zero_rows():
    adj = normalized_adjacency(np.array([0]), np.array([0]), n_users=2, n_items=2).to_dense()
    assert adj[1].abs().sum() == 0 and adj[3].abs().sum() == 0 and adj[0, 2] == 1.0


def test_propagation_matches_dense_reference():
    model = _model(n_layers=3).eval()
    a = np.zeros((N_USERS + N_ITEMS,) * 2)
    a[TRAIN[0], N_USERS + TRAIN[1]] = a[N_USERS + TRAIN[1], TRAIN[0]] = 1.0
    d = a.sum(1)
    d_is = np.where(d > 0, d, 1.0) ** -0.5 * (d > 0)
    a_hat = d_is[:, None] * a * d_is[None, :]
    e = np.concatenate([model.user_emb.detach().numpy(), model.item_emb.detach().numpy()]).astype(np.float64)
    layers = [e]
    for _ in range(3):
        layers.append(a_hat @ layers[-1])
    ref = np.mean(layers, axis=0)
    np.testing.assert_allclose(model.user_embeddings().numpy(), ref[:N_USERS], atol=1e-6)
    np.testing.assert_allclose(model.item_embeddings().numpy(), ref[N_USERS:], atol=1e-6)


def test_eval_cache_reused_and_invalidated():
    model = _model().eval()
    first = model.user_embeddings()
    assert model.user_embeddings() is first and not first.requires_grad  # cached
    with torch.no_grad():
        model.user_emb.add_(1.0)  # a parameter changes in place
    changed = model.user_embeddings()
    assert changed is not first and not torch.allclose(changed, first)
    model.train()
    assert model._cache is None
    fresh = model.user_embeddings()
    assert fresh.requires_grad  # train mode propagates with gradients
    model.eval()
    torch.testing.assert_close(model.user_embeddings(), fresh.detach())


def test_loss_decreases_with_training():
    model = _model(l2=1e-4)
    batch = {"uid": torch.tensor(TRAIN[0]), "pos": torch.tensor(TRAIN[1]), "neg": torch.tensor([[0], [10], [0], [0], [1], [1], [2], [3], [4], [5]])}
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = float(model(batch).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = model(batch)
        loss.backward()
        opt.step()
    assert model.user_emb.grad is not None and model.item_emb.grad is not None
    assert float(model(batch).detach()) < first * 0.5


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_full_scores_batch_independent(mode):
    model = _model()
    getattr(model, mode)()
    uids = torch.arange(N_USERS)
    with torch.no_grad():
        whole = model.full_scores(uids)
        parts = torch.cat([model.full_scores(uids[s : s + 3]) for s in range(0, N_USERS, 3)])
    torch.testing.assert_close(parts, whole)
    torch.testing.assert_close(model.score(uids, torch.full_like(uids, 4)), whole[:, 4])


def test_requires_train_pairs():
    with pytest.raises(ValueError, match="train_pairs"):
        LightGCN(ModelConfig(name="lightgcn"), 2, 2)


@pytest.mark.parametrize("n_layers", [2, 3])
def test_init_from_exported_embeddings_reproduces_the_trained_scores(n_layers):
    """The layer-0 tables found from a model's exported (propagated) embeddings score as that model."""
    from bridgerec.models.config import ModelConfig
    from bridgerec.models.lightgcn import LightGCN

    rng = np.random.default_rng(0)
    uids, iids = rng.integers(0, 60, 400), np.minimum(rng.zipf(1.6, 400) - 1, 39)
    cfg = ModelConfig(name="lightgcn", dim=8, n_layers=n_layers)
    torch.manual_seed(0)
    trained, fresh = LightGCN(cfg, 60, 40, train_pairs=(uids, iids)), LightGCN(cfg, 60, 40, train_pairs=(uids, iids))
    users, items = trained.eval().export_embeddings()
    assert not torch.allclose(fresh.eval().full_scores(torch.arange(60)), trained.full_scores(torch.arange(60)))
    fresh.init_from_embeddings(users, items)
    torch.testing.assert_close(fresh.eval().full_scores(torch.arange(60)), trained.full_scores(torch.arange(60)),
                               rtol=1e-4, atol=1e-6)
