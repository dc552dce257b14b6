"""End to end: prepare -> Ray Train (2 workers) -> evaluate -> MLflow, and the CLI around it."""

from __future__ import annotations

import math
from pathlib import Path

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
    # a local SQLite store keeps artifacts beside the database, not in ./mlruns of the cwd
    assert run.info.artifact_uri.startswith((Path(cfg.work_dir).resolve() / "mlartifacts").as_uri())


def test_evaluate_reproduces_logged_test_metrics(trained):
    cfg, s = trained
    _, res = evaluate_run(s.run_id, "test", tracking_uri=s.tracking_uri)
    assert res.overall["recall@20"] == pytest.approx(s.test.overall["recall@20"])


def test_trained_run_feeds_prompt_augmentation(trained):
    """``augment.prompt_aug.embeddings=runs:/<id>/model`` reads the logged run's embeddings."""
    from bridgerec.augment import load_domain_embeddings

    cfg, s = trained
    users, items = load_domain_embeddings(f"runs:/{s.run_id}/model", s.tracking_uri)
    assert users.shape == (s.dataset.n_users, cfg.model.dim) and items.shape == (s.dataset.n_items, cfg.model.dim)


def test_cli_evaluate_finds_the_local_store(trained, capsys, monkeypatch):
    cfg, s = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["evaluate", "--run-id", s.run_id, "--work-dir", cfg.work_dir]) == 0
    out = capsys.readouterr().out
    assert "recall@20" in out and f"{s.test.overall['recall@20']:.4f}" in out
    # the same results block as train/quickstart: popularity beside the model, the run, the UI, the log
    assert f"{s.baseline.overall['recall@20']:.4f}" in out and out.count("\npopularity ") == 1
    assert f"MLflow run: {s.run_id}" in out and "open the MLflow UI: mlflow ui" in out and "full log: " in out


def test_cli_unknown_run_id_is_a_clear_error(trained, capsys):
    cfg, s = trained
    assert main(["evaluate", "--run-id", "0" * 32, "--tracking-uri", s.tracking_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bridgerec evaluate: error:") and "0" * 32 in err and "Traceback" not in err


def test_cli_config_error_exits_2_naming_key(capsys):
    assert main(["train", "train.epochz=1"]) == 2
    assert "train.epochz" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["model.name", "method.name"])
def test_cli_unknown_plugin_fails_before_data_work(key, capsys, tmp_path):
    assert main(["train", f"work_dir={tmp_path}", f"{key}=nope"]) == 2
    err = capsys.readouterr().err
    assert f"{key}: unknown" in err and "registered:" in err
    assert not (tmp_path / "datasets").exists()  # nothing was prepared


def test_quickstart_prints_the_results_table(ray_session, tiny_config, capsys):
    """The README's main job, on the tiny preset (the shipped config with small overrides)."""
    work = tiny_config.work_dir
    assert main(["quickstart", f"work_dir={work}", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
                 "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", "model.dim=16", "train.epochs=2",
                 "train.batch_size=128", "run_name=quickstart-test"]) == 0
    out = capsys.readouterr().out
    assert "bridgerec quickstart: synthetic-tiny" in out and "test = each user's last event" in out
    assert "popularity" in out and "mf" in out and "recall@20" in out
    assert "MLflow run: " in out and "open the MLflow UI: mlflow ui" in out


def test_cli_lists_registered_models_and_methods(capsys):
    assert main(["models"]) == 0 and main(["methods"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["lightgcn", "mf", "popularity", "sasrec", "base", "bdlm", "bigrec", "darec", "llama4rec", "rlmrec-con", "rlmrec-gen"]


@pytest.mark.parametrize("argv", [["--help"], ["quickstart", "--help"], ["data", "prepare", "--help"], ["train", "--help"], ["evaluate", "--help"], ["augment", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: bridgerec" in capsys.readouterr().out
