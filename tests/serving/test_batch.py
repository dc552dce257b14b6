"""Batch scoring and index building for an existing run: ``bridgerec recommend`` (Ray Data over the
Serve app's search code) equals the pyfunc model for every user, and ``bridgerec index build``
logs working indexes under the run's ``serving/`` artifacts."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pandas as pd

from bridgerec.cli import main


def test_batch_recommend_equals_pyfunc(served, tmp_path):
    from bridgerec.workflows.serve import batch_recommend

    out = str(tmp_path / "recs.parquet")
    recs = batch_recommend("models:/serve-test/1", out, served["uri"], k=5, log=lambda m: None)
    users = served["data"].users()["user_id"].astype(str).tolist()
    assert sorted(recs["user_id"].unique()) == sorted(users)
    mlflow.set_tracking_uri(served["uri"])
    ref = mlflow.pyfunc.load_model("models:/serve-test/1").predict(pd.DataFrame({"user_id": users}))
    got = recs.sort_values(["user_id", "rank"]).reset_index(drop=True)
    ref = ref[ref["rank"] <= 5].sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert got[["user_id", "rank", "item_id", "title"]].values.tolist() == ref[["user_id", "rank", "item_id", "title"]].values.tolist()
    np.testing.assert_allclose(got["score"], ref["score"], rtol=1e-4, atol=1e-5)
    assert pd.read_parquet(out).shape == recs.shape


def test_recommend_cli_for_a_user_list(served, tmp_path, capsys):
    users = served["data"].users()["user_id"].astype(str).tolist()[:3]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    out = str(tmp_path / "some.parquet")
    code = main(["recommend", "--model", "models:/serve-test/1", "--out", out, "--k", "4", "--users",
                 str(tmp_path / "users.txt"), "--tracking-uri", served["uri"], "--work-dir", str(tmp_path / "w")])
    assert code == 0
    recs = pd.read_parquet(out)
    assert sorted(recs["user_id"].unique()) == sorted(users) and recs.groupby("user_id").size().tolist() == [4, 4, 4]
    assert "bridgerec recommend:" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("not-a-user\n")
    assert main(["recommend", "--model", "models:/serve-test/1", "--out", out, "--users", str(tmp_path / "bad.txt"),
                 "--tracking-uri", served["uri"], "--work-dir", str(tmp_path / "w")]) == 2
    assert "unknown user ids: ['not-a-user']" in capsys.readouterr().err


def test_index_build_logs_serving_indexes_to_the_run(served, tmp_path):
    from bridgerec.retrieval.index import load_index

    run_id = served["summary"].run_id
    code = main(["index", "build", "--run-id", run_id, "--tracking-uri", served["uri"], "--work-dir", str(tmp_path / "w"),
                 "retrieval.grounding_index=false"])
    assert code == 0
    names = {f.path for f in mlflow.MlflowClient(served["uri"]).list_artifacts(run_id, "serving")}
    assert {"serving/retrieval.faiss", "serving/retrieval.faiss.json", "serving/serving.json"} <= names
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="serving", tracking_uri=served["uri"],
                                                dst_path=str(tmp_path / "dl"))
    index = load_index(os.path.join(local, "retrieval.faiss"))
    assert (index.kind, index.n) == ("flat", served["data"].n_items)
