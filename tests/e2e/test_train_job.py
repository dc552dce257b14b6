"""End to end: prepare -> Ray Train (2 workers) -> evaluate -> MLflow, and the CLI around it."""

from __future__ import annotations

import math

import mlflow
import pytest

from bridgerec.cli import main
from bridgerec.config import load_config
from bridgerec.workflows import evaluate_run, train_and_log


@pytest.fixture(scope="module")
def trained(ray_session, tiny_dataset, tiny_config, session_dir):
    cfg = tiny_config.model_copy(deep=True)
    cfg = load_config(None, [f"work_dir={cfg.work_dir}", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
                             "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3",
                             "train.epochs=3", "train.batch_size=128", "train.lr=0.02", "model.dim=16", "run_name=e2e-mf"])
    return cfg, train_and_log(cfg, log=lambda m: None)


def test_run_logged_to_mlflow(trained):
    cfg, s = trained
    assert s.run_id
    mlflow.set_tracking_uri(s.tracking_uri)
    run = mlflow.get_run(s.run_id)
    m = run.data.metrics
    for key in ("test_recall_at_20", "test_ndcg_at_10", "baseline_popularity_test_recall_at_20", "valid_recall_at_20", "train_loss"):
        assert key in m and math.isfinite(m[key]), key
    assert run.data.params["train.epochs"] == "3"
    assert run.data.tags["dataset.content_hash"] == s.dataset.content_hash
    arts = {a.path for a in mlflow.MlflowClient(s.tracking_uri).list_artifacts(s.run_id, "model")}
    assert {"model/weights.pt", "model/item_embeddings.npy", "model/item_ids.parquet", "model/config.yaml"} <= arts
    history = mlflow.MlflowClient(s.tracking_uri).get_metric_history(s.run_id, "train_loss")
    assert len(history) == 3  # one per epoch, logged by rank 0


def test_evaluate_reproduces_logged_test_metrics(trained):
    cfg, s = trained
    _, res = evaluate_run(s.run_id, "test", tracking_uri=s.tracking_uri)
    assert res.overall["recall@20"] == pytest.approx(s.test.overall["recall@20"])


def test_cli_config_error_exits_2_naming_key(capsys):
    assert main(["train", "train.epochz=1"]) == 2
    assert "train.epochz" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["quickstart", "--help"], ["data", "prepare", "--help"], ["train", "--help"], ["evaluate", "--help"], ["augment", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: bridgerec" in capsys.readouterr().out
