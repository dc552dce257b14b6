"""The alignment methods on every trainable domain model, at the module level: each named loss is
finite and moves exactly the parameter groups it should; ablation switches drop losses and
modules; exported embeddings score like ``full_scores``; the loss functions match hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridgerec.config import load_config
from bridgerec.methods import build_method, method_names
from bridgerec.methods.alignment import _cross_correlation_sq, info_nce, kmeans
from bridgerec.models import build_model
from bridgerec.models.sasrec import build_sequences, histories_from_frame

U, I, DS, B = 24, 18, 12, 16
_rng = np.random.default_rng(0)
UIDS = np.concatenate([np.arange(U), _rng.integers(0, U, 60)])
IIDS = np.concatenate([np.arange(I), np.arange(U - I) % I, _rng.integers(0, I, 60)])
HIST = histories_from_frame(UIDS, IIDS, np.arange(len(UIDS)), U)
INPUTS = {
    "user_semantic": _rng.normal(size=(U, DS)).astype(np.float32),
    "item_semantic": _rng.normal(size=(I, DS)).astype(np.float32),
    "train_interactions": np.stack([UIDS, IIDS]),
}
MODELS = ("mf", "lightgcn", "sasrec")
ALIGNERS = ("rlmrec-con", "rlmrec-gen", "darec")

SHARED = {"domain", "align.collab_shared", "align.semantic_shared"}
EXPECTED = {  # loss name -> parameter groups that it (and only it) moves
    "rlmrec-con": {"rec": {"domain"}, "align": {"domain", "align.proj"}},
    "rlmrec-gen": {"rec": {"domain"}, "recon": {"domain", "recon.proj"}},
    "darec": {
        "rec": {"domain"},
        "rec_shared": {"domain", "align.collab_shared"},
        "orth": SHARED | {"align.collab_specific", "align.semantic_specific"},
        "shared": SHARED,
        "global": SHARED,
        "local": SHARED,
    },
}


def _cfg(method: str, model: str, *extra: str):
    return load_config(None, [f"method.name={method}", f"model.name={model}", "model.dim=8", "model.max_seq_len=4",
                              "model.dropout=0.0", "method.darec.n_clusters=3", *extra])


def _method(method: str, model: str, *extra: str, seed: int = 0):
    cfg = _cfg(method, model, *extra)
    torch.manual_seed(seed)
    domain = build_model(cfg.model, U, I, train_pairs=(UIDS, IIDS), histories=HIST[:2])
    return build_method(cfg.method, domain, INPUTS)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = np.random.default_rng(seed)
    rows = g.choice(len(UIDS), B, replace=False)
    uid, pos = UIDS[rows], IIDS[rows]
    return {"uid": torch.from_numpy(uid), "pos": torch.from_numpy(pos), "neg": torch.from_numpy(g.integers(0, I, (B, 2))),
            "seq": build_sequences(HIST[:2], uid, HIST[2][rows], 4)}


def _group(name: str) -> str:
    parts = name.split(".")
    return "domain" if parts[0] == "domain" else ".".join(parts[:2])


def test_registered():
    assert set(ALIGNERS) <= set(method_names())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ALIGNERS)
def test_each_loss_moves_exactly_its_parameters(method, model):
    losses = _method(method, model)(_batch())
    assert set(losses) == set(EXPECTED[method])
    for name in EXPECTED[method]:
        m = _method(method, model)  # fresh and identically initialised for every loss
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        loss = m(_batch())[name]
        assert loss.dim() == 0 and math.isfinite(float(loss.detach())), (name, loss)
        loss.backward()
        with_grad = {_group(n) for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
        moved = {_group(n) for n, p in m.named_parameters() if not torch.equal(p.detach(), before[n])}
        assert with_grad == moved == EXPECTED[method][name], (name, with_grad, moved)


@pytest.mark.parametrize("method", ALIGNERS)
def test_every_parameter_gets_a_gradient_from_the_sum(method):
    """DDP (find_unused_parameters=False) needs a gradient for every parameter each step."""
    m = _method(method, "lightgcn")
    sum(m(_batch()).values()).backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
    assert {"domain.adj", "semantic.user", "semantic.item"} <= set(m._ddp_params_and_buffers_to_ignore)
    assert not any(k.startswith("semantic.") for k in m.state_dict()), "semantic inputs are not weights"


@pytest.mark.parametrize(("method", "switches", "losses"), [
    ("rlmrec-con", ["method.rlmrec.align_items=false"], {"rec", "align"}),
    ("rlmrec-con", ["method.rlmrec.align_users=false", "method.rlmrec.align_items=false"], {"rec"}),
    ("rlmrec-gen", ["method.rlmrec.align_users=false", "method.rlmrec.align_items=false"], {"rec"}),
    ("darec", ["method.darec.orthogonal=false"], {"rec", "rec_shared", "shared", "global", "local"}),
    ("darec", ["method.darec.local_align=false", "method.darec.global_align=false"], {"rec", "rec_shared", "orth", "shared"}),
    ("darec", ["method.darec.enrich=false", "method.darec.shared=false"], {"orth", "global", "local", "rec"}),
    ("darec", ["method.darec.enrich=false", "method.darec.orthogonal=false", "method.darec.shared=false",
               "method.darec.global_align=false", "method.darec.local_align=false"], {"rec"}),
])
def test_ablation_switches(method, switches, losses):
    m = _method(method, "mf", *switches)
    got = m(_batch())
    assert set(got) == losses
    sum(got.values()).backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []  # nothing unused is built
    if losses == {"rec"}:
        assert all(n.startswith("domain.") for n, _ in m.named_parameters())


def test_darec_recommends_with_enriched_embeddings():
    m = _method("darec", "lightgcn", "method.darec.dim=5")
    m(_batch())
    m.eval()
    users, items = m.export_embeddings()
    assert users.shape == (U, 8 + 5) and items.shape == (I, 8 + 5)
    uids = torch.tensor([0, 3, 7])
    torch.testing.assert_close(m.full_scores(uids), users[uids] @ items.T)
    e_u, e_i = m.domain.user_embeddings(), m.domain.item_embeddings()
    p = m.align.collab_shared
    torch.testing.assert_close(m.full_scores(uids), e_u[uids] @ e_i.T + p(e_u[uids]) @ p(e_i).T)
    plain = _method("darec", "lightgcn", "method.darec.enrich=false")
    plain.eval()
    torch.testing.assert_close(plain.full_scores(uids), plain.domain.full_scores(uids))
    assert plain.export_embeddings()[0].shape == (U, 8)


def test_darec_refreshes_centers_every_n_steps():
    m = _method("darec", "mf", "method.darec.kmeans_every=2")
    seen = []
    for step in range(4):
        m(_batch(step))
        seen.append(m.centers_user.clone())
    assert int(m.kmeans_step) == 4
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2]) and torch.equal(seen[2], seen[3])
    torch.testing.assert_close(seen[0].norm(dim=1), torch.ones(3))
    assert "centers_user" in m.state_dict() and "kmeans_step" in m.state_dict()  # resumes with its centers


def test_rlmrec_gen_masks_a_share_of_the_batch():
    m = _method("rlmrec-gen", "mf", "method.rlmrec.mask_ratio=0.5")
    ids = torch.arange(10)
    masked = m._mask(ids)
    assert len(masked) == 5 and len(set(masked.tolist())) == 5
    assert len(m._mask(torch.arange(3))) == 2  # never fewer than 2 (InfoNCE needs a negative)


def test_neighbour_mean_is_the_mean_of_training_neighbours():
    from bridgerec.methods.rlmrec import neighbour_mean

    m = _method("rlmrec-gen", "mf")
    table = torch.randn(I, 4)
    got = neighbour_mean(m._user_items, torch.tensor([0, 5]), table)
    for row, u in enumerate((0, 5)):
        items = np.unique(IIDS[UIDS == u])
        torch.testing.assert_close(got[row], table[items].mean(0))


@pytest.mark.parametrize("method", ["darec", "rlmrec-con", "rlmrec-gen"])
def test_zero3_is_rejected_before_any_work(method):
    from bridgerec.config import ConfigError
    from bridgerec.training import check_plugins

    with pytest.raises(ConfigError, match="train.zero_stage=3"):
        check_plugins(_cfg(method, "mf", "train.strategy=deepspeed", "train.zero_stage=3"))
    check_plugins(_cfg("base", "mf", "train.strategy=deepspeed", "train.zero_stage=3"))  # base runs under ZeRO-3


def test_missing_semantic_inputs_fail_clearly():
    cfg = _cfg("rlmrec-con", "mf")
    domain = build_model(cfg.model, U, I)
    with pytest.raises(ValueError, match="user_semantic"):
        build_method(cfg.method, domain, {})


# -- the loss functions against hand-computed values ----------------------------------------------


def test_info_nce_hand_value():
    eye = torch.eye(2)
    # logits = I / τ; each row: -log(e^(1/τ) / (e^(1/τ) + 1))
    torch.testing.assert_close(info_nce(eye, eye, 1.0), torch.tensor(math.log(1 + math.exp(-1))))
    torch.testing.assert_close(info_nce(eye, 3 * eye, 0.5), torch.tensor(math.log(1 + math.exp(-2))))  # scale-free


def test_cross_correlation_hand_values():
    a = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    b = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])  # uncorrelated with a
    assert float(_cross_correlation_sq(a, b)) == pytest.approx(0.0)
    assert float(_cross_correlation_sq(a, -2 * a)) == pytest.approx(1.0)
    ab = torch.cat([a, b], 1)  # 2 x 2 correlations: [[1, 0], [0, 1]] -> mean of squares 0.5
    assert float(_cross_correlation_sq(ab, ab)) == pytest.approx(0.5)


def test_kmeans_finds_separated_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor([[5.0, 0.0]]) + 0.1 * torch.randn(20, 2, generator=g),
                   torch.tensor([[0.0, 5.0]]) + 0.1 * torch.randn(20, 2, generator=g)])
    c = kmeans(x, None, 2, 10, generator=g)
    order = c[:, 0].argsort(descending=True)
    torch.testing.assert_close(c[order], torch.eye(2), atol=0.05, rtol=0)
