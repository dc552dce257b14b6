"""The registered pyfunc recommender: logged from an MF model, loaded by registry URI (version and
alias), equal to a numpy top-k reference, never returning a user's known (train, valid or test)
item, and loadable in a separate plain Python process; a SASRec one serves full-history embeddings
and carries its weights for serving history-only users (MF does not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from bridgerec.config import ModelConfig
from bridgerec.data.dataset import DatasetDir
from bridgerec.models import SERVING_HISTORY, build_model, build_model_for_dataset, histories_for
from bridgerec.tracking import log_pyfunc_model
from bridgerec.tracking.pyfunc import known_pairs, seen_csr

NAME = "bridgerec-test-mf"
K = 5


@pytest.fixture(scope="module")
def logged(tiny_dataset, tiny_config, tmp_path_factory):
    data = DatasetDir(tiny_dataset)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mf", dim=16, init_std=0.5), data.n_users, data.n_items)
    uri = f"sqlite:///{tmp_path_factory.mktemp('pyfunc')}/m.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("pyfunc-test")
        with mlflow.start_run(run_name="pyfunc") as run:
            info = log_pyfunc_model(model, data, tiny_config, registered_name=NAME, k=K, alias="champion")
        yield dict(data=data, model=model, uri=uri, info=info, run_id=run.info.run_id)
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def loaded(logged):
    mlflow.set_tracking_uri(logged["uri"])
    return mlflow.pyfunc.load_model(f"models:/{NAME}/1")


def _reference(logged, user_ids: list[str], k: int) -> pd.DataFrame:
    """Plain numpy: scores = U @ I.T, every known (train, valid, test) item masked, top-k by score."""
    data, model = logged["data"], logged["model"]
    users, items = (t.numpy().astype(np.float64) for t in model.export_embeddings())
    uid_of = dict(zip(data.users()["user_id"].astype(str), data.users()["uid"]))
    item_tab = data.items()
    tu, ti = (np.concatenate(a) for a in zip(*(data.pairs(s) for s in ("train", "valid", "test"))))
    rows = []
    for user in user_ids:
        u = uid_of[user]
        s = items @ users[u]
        s[ti[tu == u]] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        top = top[np.isfinite(s[top])]
        for r, i in enumerate(top, 1):
            rows.append((user, r, item_tab["item_id"][i], item_tab["title"][i], s[i]))
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "title", "score"])


def _some_users(logged, n=25) -> list[str]:
    return logged["data"].users()["user_id"].astype(str).iloc[:: max(1, logged["data"].n_users // n)].tolist()[:n]


def _assert_matches(out: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(out.columns) == ["user_id", "rank", "item_id", "title", "score"]
    assert out[["user_id", "rank", "item_id", "title"]].astype(str).values.tolist() == ref[["user_id", "rank", "item_id", "title"]].astype(str).values.tolist()
    np.testing.assert_allclose(out["score"].to_numpy(), ref["score"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_registered_and_aliased(logged, tmp_path):
    info = logged["info"]
    assert info.registered_model_version == 1
    client = mlflow.MlflowClient(logged["uri"])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_model_version(NAME, "1").run_id == logged["run_id"]
    local = mlflow.artifacts.download_artifacts(info.model_uri, tracking_uri=logged["uri"], dst_path=str(tmp_path))
    desc = json.load(open(os.path.join(local, "artifacts", "domain_model.json")))
    assert (desc["model"]["name"], desc["conditions_on_history"], desc["weights"]) == ("mf", False, None)
    assert not os.path.exists(os.path.join(local, "artifacts", "domain_model.pt"))  # MF: the mean serves unknown users


def test_predict_equals_numpy_reference(logged, loaded):
    users = _some_users(logged)
    out = loaded.predict(pd.DataFrame({"user_id": users}))
    _assert_matches(out, _reference(logged, users, K))
    assert out.groupby("user_id").size().max() == K


def test_known_items_never_returned(logged, loaded):
    """Serving excludes every known interaction: train, and also the user's valid and test items."""
    data = logged["data"]
    users = data.users()["user_id"].astype(str).tolist()
    out = loaded.predict(pd.DataFrame({"user_id": users, "k": [20] * len(users)}))
    uid_of = dict(zip(users, data.users()["uid"]))
    iid_of = dict(zip(data.items()["item_id"].astype(str), data.items()["iid"]))
    known = {split: set(zip(*(a.tolist() for a in data.pairs(split)))) for split in ("train", "valid", "test")}
    assert known["valid"] and known["test"]
    returned = {(uid_of[u], iid_of[i]) for u, i in zip(out["user_id"], out["item_id"])}
    for split, pairs in known.items():
        assert not returned & pairs, f"recommended {len(returned & pairs)} of the users' own {split} items"
    for user, group in out.groupby("user_id"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert (np.diff(group["score"].to_numpy()) <= 0).all()


def test_per_row_k_and_alias_uri(logged, loaded):
    users = _some_users(logged, 3)
    out = loaded.predict(pd.DataFrame({"user_id": users, "k": np.array([1, 3, 7], dtype=np.int64)}))
    assert out.groupby("user_id", sort=False).size().tolist() == [1, 3, 7]
    by_alias = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    _assert_matches(by_alias.predict(pd.DataFrame({"user_id": users, "k": np.array([1, 3, 7], dtype=np.int64)})), out)


def test_signature(loaded):
    sig = loaded.metadata.signature
    inputs = {c.name: c for c in sig.inputs.inputs}
    assert inputs["user_id"].type.name == "string" and inputs["user_id"].required
    assert inputs["k"].type.name == "long" and not inputs["k"].required
    assert sig.outputs.input_names() == ["user_id", "rank", "item_id", "title", "score"]


def test_unknown_users_error_names_them(loaded, logged):
    users = _some_users(logged, 1) + ["nobody-1", "nobody-2"]
    with pytest.raises(ValueError, match="unknown user_id.*'nobody-1', 'nobody-2'"):
        loaded.predict(pd.DataFrame({"user_id": users}))


def test_unknown_users_popularity_fallback(logged):
    mlflow.set_tracking_uri(logged["uri"])
    m = mlflow.pyfunc.load_model(f"models:/{NAME}/1", model_config={"unknown_user": "popular"})
    out = m.predict(pd.DataFrame({"user_id": ["nobody"], "k": np.array([4], dtype=np.int64)}))
    data = logged["data"]
    counts = np.bincount(seen_csr(*known_pairs(data), n_users=data.n_users)[1], minlength=data.n_items)  # users per item
    expected = np.lexsort((np.arange(data.n_items), -counts))[:4]
    assert out["item_id"].tolist() == data.items()["item_id"].astype(str)[expected].tolist()
    assert out["score"].tolist() == counts[expected].astype(float).tolist()


def test_loads_and_predicts_in_plain_subprocess(logged, loaded, tmp_path):
    users = _some_users(logged, 4)
    code = textwrap.dedent(
        f"""
        import json, sys
        import mlflow, pandas as pd
        m = mlflow.pyfunc.load_model("models:/{NAME}@champion")
        out = m.predict(pd.DataFrame({{"user_id": {users!r}}}))
        heavy = sorted(n for n in ("torch", "ray", "bridgerec") if n in sys.modules)
        print(json.dumps({{"heavy": heavy, "rows": out.astype({{"score": float}}).values.tolist()}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = logged["uri"]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"loading pulled in {result['heavy']}"
    got = pd.DataFrame(result["rows"], columns=["user_id", "rank", "item_id", "title", "score"])
    _assert_matches(got, loaded.predict(pd.DataFrame({"user_id": users})))


def test_topk_chunked_matches_bruteforce(tmp_path, monkeypatch):
    """The class itself (no MLflow store): chunked scoring, seen-item masking and short lists."""
    from types import SimpleNamespace

    import bridgerec.tracking.pyfunc as pf

    rng = np.random.default_rng(0)
    n_users, n_items, d = 37, 23, 4
    users, items = rng.normal(size=(n_users, d)).astype(np.float32), rng.normal(size=(n_items, d)).astype(np.float32)
    tu = np.repeat(np.arange(n_users), 3)
    ti = rng.integers(0, n_items, size=len(tu))
    tu, ti = np.append(tu, [5] * (n_items - 2)), np.append(ti, np.arange(n_items - 2))  # user 5: < k unseen items left
    paths = {key: str(tmp_path / f) for key, f in pf.ARTIFACT_FILES.items()}
    np.save(paths["user_embeddings"], users)
    np.save(paths["item_embeddings"], items)
    pd.DataFrame({"uid": np.arange(n_users), "user_id": [f"u{i}" for i in range(n_users)]}).to_parquet(paths["user_ids"])
    pd.DataFrame({"iid": np.arange(n_items), "item_id": [f"i{i}" for i in range(n_items)], "title": [f"t{i}" for i in range(n_items)]}).to_parquet(paths["item_ids"])
    indptr, indices = pf.seen_csr(tu, ti, n_users)
    np.savez(paths["seen"], indptr=indptr, indices=indices)
    monkeypatch.setattr(pf, "_CHUNK_FLOATS", 2 * n_items)  # 2 users per matrix product
    m = pf.TopKRecommender()
    m.load_context(SimpleNamespace(artifacts=paths, model_config={"k": 4}))
    out = m.predict(None, pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)]}))
    for u in range(n_users):
        s = items @ users[u]
        s[ti[tu == u]] = -np.inf
        top = [i for i in np.argsort(-s, kind="stable")[:4] if np.isfinite(s[i])]
        got = out[out["user_id"] == f"u{u}"]
        assert got["item_id"].tolist() == [f"i{i}" for i in top], u
        np.testing.assert_allclose(got["score"], s[top], rtol=1e-5)
    assert (out["user_id"] == "u5").sum() == n_items - len(set(ti[tu == 5].tolist())) < 4  # fewer than k unseen
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.predict(None, pd.DataFrame({"user_id": ["u1"], "k": [0]}))
    assert m.predict(None, pd.DataFrame({"user_id": []})).columns.tolist() == ["user_id", "rank", "item_id", "title", "score"]


def test_sasrec_serves_full_history_embeddings(tiny_dataset, tiny_config, tmp_path):
    """A sequence model's served user embeddings encode every known event (train, valid, test);
    the model itself is back on its training histories afterwards."""
    data = DatasetDir(tiny_dataset)
    torch.manual_seed(0)
    model = build_model_for_dataset(ModelConfig(name="sasrec", dim=8, n_heads=2, n_layers=1, max_seq_len=5), data).eval()
    train_emb = model.export_embeddings()[0]
    train_hist = model.histories
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    mlflow.set_experiment("pyfunc-sasrec")
    with mlflow.start_run():
        info = log_pyfunc_model(model, data, tiny_config, k=K)
    artifacts = os.path.join(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")), "artifacts")
    served = np.load(os.path.join(artifacts, "user_embeddings.npy"))
    # its weights and its own config (not cfg.model, which is MF here) for serving history-only users
    desc = json.load(open(os.path.join(artifacts, "domain_model.json")))
    assert (desc["model"]["name"], desc["model"]["max_seq_len"], desc["weights"]) == ("sasrec", 5, "domain_model.pt")
    assert set(torch.load(os.path.join(artifacts, "domain_model.pt"), weights_only=True)) == set(model.state_dict())
    full = histories_for(data, SERVING_HISTORY)
    indptr, items = full
    tu, ti = data.pairs("test")
    u = int(tu[0])
    assert items[indptr[u + 1] - 1] in set(ti[tu == u].tolist())  # leave-last-out: ends with the test item
    reference = build_model_for_dataset(ModelConfig(name="sasrec", dim=8, n_heads=2, n_layers=1, max_seq_len=5), data)
    reference.load_state_dict(model.state_dict())
    reference.set_histories(full)
    np.testing.assert_allclose(served, reference.eval().export_embeddings()[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(served, train_emb.numpy())
    assert model.histories[0] is train_hist[0] and model.histories[1] is train_hist[1]
    torch.testing.assert_close(model.export_embeddings()[0], train_emb)
