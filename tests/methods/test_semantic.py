"""The semantic inputs of the alignment methods: item-text fallback, user means over TRAINING items
only, profile rows from a text_embeddings output, and the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridgerec.augment.text_embeddings import item_text
from bridgerec.config import load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.llm import encoder as encoder_module
from bridgerec.llm.encoder import encoder_fingerprint
from bridgerec.methods import semantic
from bridgerec.methods.inputs import load_method_inputs

DS = 6


class FakeEncoder:
    """Deterministic stand-in for MiniLM: a unit vector seeded by the text's hash."""

    calls = 0

    def __init__(self, cfg=None):
        pass

    def encode(self, texts, progress=None):
        FakeEncoder.calls += 1
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=DS) for t in texts]
        out = np.asarray(rows, np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def fake_encoder(monkeypatch):
    FakeEncoder.calls = 0
    monkeypatch.setattr(encoder_module, "TextEncoder", FakeEncoder)
    monkeypatch.setattr(semantic, "_MEMO", {})
    return FakeEncoder


def _cfg(tiny_config, root, *extra):
    return load_config(None, [f"work_dir={tiny_config.work_dir}", f"augment.output_root={root}", "method.name=rlmrec-con", *extra])


def _normalized(x):
    return x / np.linalg.norm(x)


def test_item_text_fallback_and_training_only_user_means(tiny_dataset, tiny_config, tmp_path, fake_encoder):
    data = DatasetDir(tiny_dataset)
    cfg = _cfg(tiny_config, tmp_path)
    inputs = load_method_inputs(cfg, data)
    users, items = inputs["user_semantic"], inputs["item_semantic"]
    assert users.shape == (data.n_users, DS) and items.shape == (data.n_items, DS) and users.dtype == np.float32
    table = data.items()
    expected_items = FakeEncoder().encode([item_text(t, x) for t, x in zip(table["title"].astype(str), table["text"].fillna("").astype(str))])
    np.testing.assert_allclose(items, expected_items, atol=1e-6)
    train, test = data.frame("train"), data.frame("test")
    u = int(test["uid"].iloc[0])
    own = train.loc[train["uid"] == u, "iid"].to_numpy()
    np.testing.assert_allclose(users[u], _normalized(expected_items[own].mean(0)), atol=1e-5)
    held_out = int(test.loc[test["uid"] == u, "iid"].iloc[0])
    if held_out not in own:  # a test item never leaks into the user's row
        leaked = _normalized(expected_items[np.append(own, held_out)].mean(0))
        assert not np.allclose(users[u], leaked, atol=1e-4)
    assert set(inputs) == {"user_semantic", "item_semantic"}  # what rlmrec-con declares
    np.testing.assert_array_equal(semantic.train_interactions(cfg, data), np.stack(data.pairs("train")))

    # cached: a fresh process (empty memo) reads the arrays without encoding again
    calls = FakeEncoder.calls
    semantic._MEMO.clear()
    again = semantic.semantic_embeddings(cfg, data)
    assert FakeEncoder.calls == calls
    np.testing.assert_array_equal(again[0], users)
    (cache,) = [d for d in os.listdir(tmp_path / "semantic") if not d.startswith(".")]
    meta = json.loads((tmp_path / "semantic" / cache / "meta.json").read_text())
    assert meta["data"] == data.content_hash and meta["source"] == "auto" and meta["stage_output"] is None


def _write_stage_output(root, data, cfg, rows, with_profiles: bool) -> str:
    out = os.path.join(root, "text_embeddings", "k1" if with_profiles else "k0")
    os.makedirs(out)
    frame = pd.DataFrame(rows, columns=["kind", "id", "embedding"])
    pq.write_table(pa.Table.from_pydict({"kind": frame["kind"].tolist(), "id": frame["id"].astype("int64").tolist(),
                                         "embedding": pa.array(frame["embedding"].tolist(), pa.list_(pa.float32()))}),
                   os.path.join(out, "part-00000.parquet"))
    meta = {"dataset_content_hash": data.content_hash, "config": {"encoder": encoder_fingerprint(cfg.encoder)},
            "deps": {"profiles": "p"} if with_profiles else {}, "created_at": "2026-01-01T00:00:00Z"}
    with open(os.path.join(out, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    return out


def test_profiles_from_the_augmentation_output(tiny_dataset, tiny_config, tmp_path, fake_encoder):
    data = DatasetDir(tiny_dataset)
    cfg = _cfg(tiny_config, tmp_path)
    rng = np.random.default_rng(0)
    item_rows = rng.normal(size=(data.n_items, DS)).astype(np.float32)
    prof_user, prof_item = rng.normal(size=DS).astype(np.float32), rng.normal(size=DS).astype(np.float32)
    rows = [("item_text", i, item_rows[i]) for i in range(data.n_items)]
    _write_stage_output(tmp_path, data, cfg, rows, with_profiles=False)
    with pytest.raises(ValueError, match="profile"):
        semantic.semantic_embeddings(_cfg(tiny_config, tmp_path, "method.semantic.source=profiles"), data)
    stage = _write_stage_output(tmp_path, data, cfg, rows + [("user_profile", 1, prof_user), ("item_profile", 2, prof_item)],
                                with_profiles=True)
    assert semantic.find_text_embeddings(cfg, data) == stage  # the one with profiles is preferred

    users, items = semantic.semantic_embeddings(cfg, data)  # auto
    assert FakeEncoder.calls == 0  # every item row came from the stage output
    np.testing.assert_array_equal(users[1], prof_user)
    np.testing.assert_array_equal(items[2], prof_item)
    np.testing.assert_array_equal(items[3], item_rows[3])  # no profile: item text
    train = data.frame("train")
    own = train.loc[train["uid"] == 0, "iid"].to_numpy()
    np.testing.assert_allclose(users[0], _normalized(item_rows[own].mean(0)), atol=1e-5)  # no profile: mean of items

    text_only = semantic.semantic_embeddings(_cfg(tiny_config, tmp_path, "method.semantic.source=item_text"), data)
    assert not np.allclose(text_only[0][1], prof_user) and np.array_equal(text_only[1][2], item_rows[2])


def test_the_consumed_output_is_pinned_and_named_before_training(tiny_dataset, tiny_config, tmp_path, fake_encoder):
    from bridgerec.methods.inputs import pin_method_inputs

    data = DatasetDir(tiny_dataset)
    cfg = _cfg(tiny_config, tmp_path)
    assert pin_method_inputs(cfg, data) == {"input.text_embeddings": "none"}  # item texts encoded by the method
    assert cfg.method.semantic.embeddings_dir is None
    rows = [("item_text", i, np.ones(DS, np.float32)) for i in range(data.n_items)]
    stage = _write_stage_output(tmp_path, data, cfg, rows, with_profiles=False)
    assert pin_method_inputs(cfg, data) == {"input.text_embeddings": "text_embeddings/k0", "input.text_embeddings.path": stage}
    assert cfg.method.semantic.embeddings_dir == stage  # workers and evaluation read this one, not the newest later
    _write_stage_output(tmp_path, data, cfg, rows, with_profiles=True)  # a newer, preferred output appears
    assert semantic.find_text_embeddings(cfg, data) == stage
    base = load_config(None, [f"work_dir={tiny_config.work_dir}"])
    assert pin_method_inputs(base, data) == {}  # `base` reads no augmentation output
