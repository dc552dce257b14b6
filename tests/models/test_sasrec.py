"""SASRec: history/sequence builders on hand-made rows, causal masking, both losses,
user embeddings from the history tail, unseen item lists encoded the same way, and score consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgerec.config import ModelConfig
from bridgerec.models.sasrec import SASRec, build_sequences, histories_from_frame

# user 0: ts 5 -> i3, ts 1 -> i7, ts 3 -> i2 (and a tie at ts 3 with i1); user 2: i4, i0; user 1: none
UIDS = np.array([0, 2, 0, 0, 2, 0])
IIDS = np.array([3, 4, 7, 2, 0, 1])
TS = np.array([5, 1, 1, 3, 2, 3])
N_USERS, N_ITEMS = 3, 8


def test_histories_from_frame_exact():
    indptr, items, positions = histories_from_frame(UIDS, IIDS, TS, N_USERS)
    np.testing.assert_array_equal(indptr, [0, 4, 4, 6])
    np.testing.assert_array_equal(items, [7, 1, 2, 3, 4, 0])  # u0 by (ts, iid), u1 empty, u2
    np.testing.assert_array_equal(positions, [3, 0, 0, 2, 1, 1])
    assert indptr.dtype == items.dtype == positions.dtype == np.int64


def test_build_sequences_exact():
    hist = histories_from_frame(UIDS, IIDS, TS, N_USERS)[:2]
    seq = build_sequences(hist, uids=[0, 0, 0, 2, 1, 2], positions=[0, 1, 4, 1, 0, 2], max_len=3)
    assert seq.dtype == torch.int64
    expected = [
        [0, 0, 0],  # first event of u0: nothing before
        [0, 0, 8],  # before index 1: i7
        [2, 3, 4],  # whole history of u0 (i7, i1, i2, i3), last 3, +1
        [0, 0, 5],  # u2 before index 1: i4
        [0, 0, 0],  # u1 has no history
        [0, 5, 1],  # whole history of u2: i4, i0
    ]
    np.testing.assert_array_equal(seq.numpy(), expected)
    with pytest.raises(ValueError, match="positions"):
        build_sequences(hist, [1], [1], 3)


def _model(seq_loss="ce", dropout=0.0, seed=0) -> SASRec:
    torch.manual_seed(seed)
    cfg = ModelConfig(name="sasrec", dim=16, n_heads=2, n_layers=2, max_seq_len=4, dropout=dropout, seq_loss=seq_loss)
    return SASRec(cfg, N_USERS, N_ITEMS, histories=histories_from_frame(UIDS, IIDS, TS, N_USERS)[:2])


def test_causal_masking():
    model = _model().eval()
    seq = torch.tensor([[0, 3, 5, 2], [1, 2, 3, 4]])
    changed = seq.clone()
    changed[:, 2] = 7  # a "future" item for positions 0 and 1
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(changed)
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_padding_is_not_attended():
    model = _model().eval()
    with torch.no_grad():
        a = model.encode(torch.tensor([[0, 0, 3, 5]]))[:, -1]
        b = model.encode(torch.tensor([[0, 0, 0, 0]]))[:, -1]
        # the same items behind more padding (shorter sequence, same last positions) agree
        c = model.encode(torch.tensor([[0, 3, 5]]))[:, -1]
    torch.testing.assert_close(a, c)
    assert torch.isfinite(b).all()


def _batch():
    indptr, items, positions = histories_from_frame(UIDS, IIDS, TS, N_USERS)
    uids = np.sort(UIDS)  # rows in history order
    pos = items
    seq = build_sequences((indptr, items), uids, np.concatenate([np.arange(4), np.arange(2)]), 4)
    neg = torch.tensor([[5, 6], [5, 6], [5, 6], [5, 6], [1, 2], [1, 2]])
    return {"uid": torch.tensor(uids), "seq": seq, "pos": torch.tensor(pos), "neg": neg}


@pytest.mark.parametrize("seq_loss", ["ce", "bpr"])
def test_losses_finite_and_decreasing(seq_loss):
    model = _model(seq_loss, dropout=0.2)
    batch = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = float(model(batch).detach())
    assert np.isfinite(first)
    for _ in range(40):
        opt.zero_grad()
        model(batch).backward()
        opt.step()
    model.eval()
    assert float(model(batch).detach()) < first * 0.7
    assert model.item_table.grad[0].abs().sum() == 0  # padding row gets no gradient


def test_user_embeddings_use_history_tail():
    model = _model().eval()
    emb = model.user_embeddings()
    assert emb.shape == (N_USERS, 16) and model.item_embeddings().shape == (N_ITEMS, 16)
    with torch.no_grad():
        tail = model.encode(torch.tensor([[8, 2, 3, 4], [0, 0, 0, 0], [0, 0, 5, 1]]))[:, -1]  # u0, u1, u2
    torch.testing.assert_close(emb, tail)
    assert model.user_embeddings() is emb  # cached in eval mode
    model.train()
    torch.testing.assert_close(model.user_embeddings(), emb)  # deterministic (no dropout) in train mode too


def test_embed_histories_encodes_lists_like_stored_histories():
    """Item lists (oldest first) are encoded as a stored history is: the last max_seq_len items,
    no dropout, in train mode too; the order matters; ids outside the catalog are an error."""
    model = _model(dropout=0.2).eval()
    lists = [[7, 1, 2, 3], [], [4, 0]]  # the stored histories of u0, u1, u2
    torch.testing.assert_close(model.embed_histories(lists), model.user_embeddings())
    with torch.no_grad():
        tail = model.encode(torch.tensor([[3, 4, 6, 1]]), stochastic=False)[:, -1]  # 5, 2, 3, 5, 0 -> last 4
    model.train()
    torch.testing.assert_close(model.embed_histories([np.array([5, 2, 3, 5, 0])]), tail)
    assert not torch.allclose(model.embed_histories([[0, 5]]), model.embed_histories([[5, 0]]))
    assert model.embed_histories([]).shape == (0, 16)
    with pytest.raises(ValueError, match="item ids"):
        model.embed_histories([[N_ITEMS]])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_score_matches_full_scores(mode):
    model = _model(dropout=0.2)
    getattr(model, mode)()
    uids, iids = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 0, 7, 5])
    full = model.full_scores(uids)
    assert full.shape == (4, N_ITEMS)
    torch.testing.assert_close(model.score(uids, iids), full[torch.arange(4), iids])
    torch.testing.assert_close(full, model.user_embeddings()[uids] @ model.item_embeddings().T)


def test_requires_histories():
    with pytest.raises(ValueError, match="histories"):
        SASRec(ModelConfig(name="sasrec"), 2, 2)
