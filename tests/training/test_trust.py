"""Training mechanics that quality depends on: the global shuffle, reproducible runs, replicas in
sync, and the small input errors (untrainable models, batches larger than the data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgerec.config import ConfigError, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.training import train
from bridgerec.training.driver import steps_per_epoch, training_stream
from bridgerec.training.loop import _Share


def _cfg(session_dir, name: str, *extra: str):
    return load_config(None, [
        f"work_dir={session_dir}/work", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
        "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", "model.dim=16",
        "train.batch_size=128", "train.lr=0.01", "tracking.enabled=false", "train.patience=0", f"run_name={name}", *extra,
    ])


class _FakeShard:
    """Ray Data shard stand-in for the in-memory share (the real shard runs in the tests below)."""

    def __init__(self, cols):
        self.cols = cols

    def iter_batches(self, batch_size=None, batch_format="numpy"):
        half = len(self.cols["uid"]) // 2  # two blocks, the second first: arrival order must not matter
        yield {k: v[half:] for k, v in self.cols.items()}
        yield {k: v[:half] for k, v in self.cols.items()}


def test_share_is_permuted_every_epoch_and_reproducibly():
    uid = np.repeat(np.arange(50), 20)  # stored sorted by user, as the splits are
    share = _Share(_FakeShard({"uid": uid, "iid": np.arange(1000) % 37}), ["uid", "iid"])
    e0 = [b["uid"] for b in share.batches(10, 64, np.random.default_rng([0, 0, 0]))]
    e1 = [b["uid"] for b in share.batches(10, 64, np.random.default_rng([0, 1, 0]))]
    again = [b["uid"] for b in share.batches(10, 64, np.random.default_rng([0, 0, 0]))]
    assert len(e0) == 10 and all(len(b) == 64 for b in e0)
    assert all(torch.equal(a, b) for a, b in zip(e0, again))
    assert not torch.equal(torch.cat(e0), torch.cat(e1))
    # a batch of 64 from a user-sorted split holds ~4 users; shuffled it holds most of the 50
    assert min(len(torch.unique(b)) for b in e0) > 30
    stored = [b["uid"] for b in share.batches(10, 64, None)]
    assert max(len(torch.unique(b)) for b in stored) <= 5


def test_training_stream_is_shuffled_globally(ray_session, tiny_dataset, session_dir):
    import ray.data

    data = DatasetDir(tiny_dataset)
    ctx = ray.data.DataContext.get_current()
    assert not ctx.execution_options.preserve_order  # Ray's default: training_stream must order its own execution

    def uids(cfg):
        ds = training_stream(cfg, data)
        assert ds.context.execution_options.preserve_order  # and keeps it for a lazy (not materialised) stream
        return np.concatenate([b["uid"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")])

    stored = uids(_cfg(session_dir, "s", "train.shuffle=none"))
    shuffled = uids(_cfg(session_dir, "s", "train.shuffle=global"))
    again = uids(_cfg(session_dir, "s", "train.shuffle=global"))
    lazy = uids(_cfg(session_dir, "s", "train.shuffle=global", "train.materialize_train=false"))
    assert not ctx.execution_options.preserve_order, "the driver's context is restored"
    changes = lambda u: int((np.diff(u) != 0).sum())  # neighbouring events of different users
    assert changes(stored) < 0.5 * len(stored), "the split is stored grouped by user"
    assert changes(shuffled) > 0.9 * len(shuffled), "shuffled, neighbours are almost always different users"
    assert sorted(shuffled.tolist()) == sorted(stored.tolist())
    np.testing.assert_array_equal(shuffled, again)  # seeded, whatever order Ray Data's tasks finish in
    np.testing.assert_array_equal(shuffled, lazy)


def test_same_config_twice_gives_identical_metrics(ray_session, tiny_dataset, session_dir):
    data = DatasetDir(tiny_dataset)
    runs = [train(_cfg(session_dir, f"repro-{i}", "model.name=mf", "train.epochs=3"), data) for i in range(2)]
    keys = ["train_loss", "valid_recall_at_20", "valid_ndcg_at_20"]
    a, b = ([{k: h[k] for k in keys} for h in r.history] for r in runs)
    assert len(a) == 3 and a == b
    assert all(h["ranks_in_sync"] == 1.0 for h in runs[0].history), "DDP replicas diverged"
    for pa, pb in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.equal(pa, pb)


def test_popularity_trains_nothing_and_does_not_crash(ray_session, tiny_dataset, session_dir):
    res = train(_cfg(session_dir, "pop", "model.name=popularity"), DatasetDir(tiny_dataset))
    assert res.checkpoint_dir == "" and 0 < res.best_metrics["valid_recall_at_20"] <= 1


def test_batch_larger_than_the_data_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.batch_size=1024 x train.num_workers=2 exceeds the 900"):
        steps_per_epoch(900, 2, 1024)
    assert steps_per_epoch(4096, 2, 1024) == 2
