"""What a sequence model conditions on at each stage: train for validation, train + validation
for test (issue 8, defect 2), every known event for serving; non-sequence models ignore it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bridgerec.config import EvalConfig, ModelConfig
from bridgerec.data.dataset import DatasetDir
from bridgerec.methods import build_method
from bridgerec.models import (
    SERVING_HISTORY,
    TEST_HISTORY,
    DomainModel,
    build_model,
    build_model_for_dataset,
    conditioned_on,
    histories_for,
    model_names,
)
from bridgerec.workflows import evaluate_model


class _Frames:
    """The two members of DatasetDir that :func:`histories_for` reads, over hand-made splits."""

    def __init__(self, n_users: int, **splits: list[tuple[int, int, int]]):
        self.n_users = n_users
        self._splits = {name: pd.DataFrame(rows, columns=["uid", "iid", "ts"]) for name, rows in splits.items()}

    def frame(self, split, columns=None):
        f = self._splits.get(split, pd.DataFrame({"uid": [], "iid": [], "ts": []}, dtype="int64"))
        return f[columns] if columns else f


def _rows(hist, u):
    indptr, items = hist
    return items[indptr[u] : indptr[u + 1]].tolist()


# user 0: train i1@1 i2@5 i9@4, valid i3@3 i4@9 and i5@4 (tied with the train i9@4), test i6@7
# user 1: train i7@2 only, valid i8@8, no test event
FRAMES = _Frames(
    3,
    train=[(0, 1, 1), (0, 2, 5), (1, 7, 2), (0, 9, 4)],
    valid=[(0, 3, 3), (0, 4, 9), (1, 8, 8), (0, 5, 4)],
    test=[(0, 6, 7)],
)


def test_histories_for_orders_by_time_then_split_and_cuts_at_first_test_event():
    train = histories_for(FRAMES, ("train",))
    assert _rows(train, 0) == [1, 9, 2] and _rows(train, 1) == [7] and _rows(train, 2) == []
    test = histories_for(FRAMES, TEST_HISTORY, before="test")
    # valid i4@9 lies after u0's test event @7 and is left out; i5@4 sorts after the train i9@4
    assert _rows(test, 0) == [1, 3, 9, 5, 2]
    assert _rows(test, 1) == [7, 8]  # no test event: every validation event is known
    serving = histories_for(FRAMES, SERVING_HISTORY)
    assert _rows(serving, 0) == [1, 3, 9, 5, 2, 6, 4] and _rows(serving, 1) == [7, 8]
    with pytest.raises(ValueError, match="splits"):
        histories_for(FRAMES, ("train", "nope"))


class _CachingWrapper(nn.Module):
    """A method-like wrapper that caches its domain model's user embeddings in eval mode and
    drops the cache in ``train()``, as the methods do."""

    def __init__(self, domain: DomainModel):
        super().__init__()
        self.domain, self._cache = domain, None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def user_embeddings(self):
        if self._cache is None:
            self._cache = self.domain.user_embeddings().clone()
        return self._cache


def _sasrec(n_users=3, n_items=10, histories=None):
    torch.manual_seed(0)
    cfg = ModelConfig(name="sasrec", dim=8, n_heads=2, n_layers=1, max_seq_len=4)
    return build_model(cfg, n_users, n_items, histories=histories or histories_for(FRAMES, ("train",)))


def test_conditioned_on_reaches_the_wrapped_model_drops_caches_and_restores():
    model = _sasrec()
    wrapper = _CachingWrapper(model).eval()
    before = wrapper.user_embeddings()
    test = histories_for(FRAMES, TEST_HISTORY, before="test")
    with conditioned_on(wrapper, test):
        assert _rows(model.histories, 0) == [1, 3, 9, 5, 2]
        np.testing.assert_array_equal(model.user_sequences([0])[0].numpy(), [4, 10, 6, 3])  # last 4 of u0, + 1
        inside = wrapper.user_embeddings()
        with torch.no_grad():
            expected = model.encode(model.user_sequences(np.arange(3)))[:, -1]
        torch.testing.assert_close(inside, expected)
        assert not torch.allclose(inside[0], before[0])
    assert _rows(model.histories, 0) == [1, 9, 2]
    torch.testing.assert_close(wrapper.user_embeddings(), before)
    with pytest.raises(ValueError, match="item ids"):
        model.set_histories((np.array([0, 1, 1, 1]), np.array([10])))


@pytest.mark.parametrize("name", [n for n in model_names() if n != "sasrec"])
def test_models_without_histories_ignore_them(name):
    model = build_model(ModelConfig(name=name, dim=8), 3, 10, train_pairs=(np.array([0, 1]), np.array([1, 2])))
    assert model.histories is None
    before = model.full_scores(torch.arange(3))

    def never():
        raise AssertionError("histories were read for a model that does not use them")

    with conditioned_on(model, never):
        torch.testing.assert_close(model.full_scores(torch.arange(3)), before)


@pytest.mark.parametrize("wrap", [False, True], ids=["domain", "method"])
def test_sasrec_test_history_ends_with_the_validation_item(tiny_dataset, tiny_config, wrap):
    """Leave-last-out: the history SASRec scores test users from ends with their validation item
    (before the fix it ended with the last training item: next-but-one prediction)."""
    data = DatasetDir(tiny_dataset)
    assert tiny_config.data.split.protocol == "leave_last_out"
    torch.manual_seed(0)
    domain = build_model_for_dataset(ModelConfig(name="sasrec", dim=8, n_heads=2, n_layers=1, max_seq_len=5), data)
    model = build_method(tiny_config.method, domain) if wrap else domain
    model.eval()
    calls: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []
    full_scores = model.full_scores

    def spy(uids):
        scores = full_scores(uids)
        calls.append((uids.numpy().copy(), domain.user_sequences(uids), scores))
        return scores

    model.full_scores = spy
    valid_u, valid_i = data.pairs("valid")
    last_valid = dict(zip(valid_u.tolist(), valid_i.tolist()))
    train_hist = histories_for(data, ("train",))
    cfg = EvalConfig(ks=[10])

    evaluate_model(model, data, cfg, "test")
    users = np.concatenate([c[0] for c in calls])
    seqs = torch.cat([c[1] for c in calls])
    checked = 0
    for u, seq in zip(users.tolist(), seqs):
        if u in last_valid:
            assert int(seq[-1]) == last_valid[u] + 1, u  # tokens are iid + 1
            checked += 1
    assert checked > 0.9 * len(users)
    with torch.no_grad():  # the scores come from that history, not from a stale cache
        expected = domain.encode(seqs[:64])[:, -1] @ domain.item_embeddings().T
    torch.testing.assert_close(torch.cat([c[2] for c in calls])[:64], expected, rtol=1e-4, atol=1e-5)

    # afterwards (and for validation) the model is back on the training items
    assert _rows(domain.histories, int(users[0])) == _rows(train_hist, int(users[0]))
    calls.clear()
    evaluate_model(model, data, cfg, "valid")
    for u, seq in zip(np.concatenate([c[0] for c in calls]).tolist(), torch.cat([c[1] for c in calls])):
        hist = _rows(train_hist, u)
        if hist:
            assert int(seq[-1]) == hist[-1] + 1


def test_histories_for_protocol_cut_on_a_random_split(tmp_path):
    """Under a random split the test-time history holds no validation event after the test one."""
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"uid": rng.integers(0, 20, n), "iid": rng.integers(0, 30, n), "ts": rng.permutation(n)})
    split = rng.choice(["train", "valid", "test"], size=n, p=[0.8, 0.1, 0.1])
    frames = _Frames(20, **{s: list(df[split == s].itertuples(index=False, name=None)) for s in ("train", "valid", "test")})
    hist = histories_for(frames, TEST_HISTORY, before="test")
    first_test = df[split == "test"].groupby("uid")["ts"].min()
    for u in range(20):
        rows = df[(df.uid == u) & ((split == "train") | ((split == "valid") & (df.ts <= first_test.get(u, np.inf))))]
        assert _rows(hist, u) == rows.sort_values("ts")["iid"].tolist()
