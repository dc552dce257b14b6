"""`bridgerec promote` against a real `mlflow server` registry: only a version that beats the
champion on the validation metric, on the same dataset hash, moves the alias (or --force); the
comparison is recorded in the version's tags either way; a refusal is one line and exit 1."""

from __future__ import annotations

import uuid

import pytest

from bridgerec.cli import main


@pytest.fixture
def registry(mlflow_server):
    """A fresh registered model and a helper that adds a version whose run has a validation metric."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("promote-test") or client.get_experiment(client.create_experiment("promote-test"))
    exp_id = exp.experiment_id if hasattr(exp, "experiment_id") else exp
    name = f"promote-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)

    def add(valid: float | None, data_hash: str = "hash-a", history: list[float] | None = None) -> str:
        run = client.create_run(exp_id, tags={"dataset.content_hash": data_hash})
        if valid is not None:
            client.log_metric(run.info.run_id, "best_valid_recall_at_20", valid)
        for step, v in enumerate(history or [], start=1):
            client.log_metric(run.info.run_id, "valid_recall_at_20", v, step=step)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, source=f"runs:/{run.info.run_id}/recommender", run_id=run.info.run_id)
        return str(mv.version)

    return client, name, add


def _champion(client, name) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_promote_refuses_a_worse_model_and_accepts_a_better_one(registry, mlflow_server, capsys):
    from bridgerec.tracking.registry import promote

    client, name, add = registry
    v1, v2, v3 = add(0.20), add(0.18), add(0.25)
    first = promote(client, name, v1)
    assert first.accepted and "no @champion yet" in first.reason and _champion(client, name) == v1

    capsys.readouterr()  # the registry's own INFO lines while versions were created
    rc = main(["promote", "--model", name, "--version", v2, "--tracking-uri", mlflow_server])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and _champion(client, name) == v1
    assert len(err.splitlines()) == 1 and "0.1800 does not beat @champion (version 1) 0.2000" in err, err
    tags = client.get_model_version(name, v2).tags
    assert tags["promote.decision"] == "refused" and tags["promote.champion_version"] == v1
    assert tags["promote.value"] == "0.1800" and tags["promote.champion_value"] == "0.2000"

    rc = main(["promote", "--model", name, "--version", v3, "--tracking-uri", mlflow_server])
    assert rc == 0 and _champion(client, name) == v3
    assert "promoted: models:/" in capsys.readouterr().out
    assert client.get_model_version(name, v3).tags["promote.decision"] == "accepted"


def test_promote_compares_only_on_the_same_dataset_unless_forced(registry):
    from bridgerec.tracking.registry import promote

    client, name, add = registry
    v1 = add(0.20)
    promote(client, name, v1)
    other = add(0.90, data_hash="hash-b")
    refused = promote(client, name, other)
    assert not refused.accepted and "not comparable" in refused.reason and _champion(client, name) == v1
    worse = add(0.10)
    forced = promote(client, name, worse, force=True)
    assert forced.accepted and _champion(client, name) == worse
    assert client.get_model_version(name, worse).tags["promote.decision"] == "forced"


def test_a_run_without_the_summary_metric_is_judged_on_its_best_epoch(registry):
    """Runs logged before `best_valid_*` existed: the best value of the per-epoch history counts."""
    from bridgerec.tracking.registry import promote

    client, name, add = registry
    v1 = add(None, history=[0.10, 0.22, 0.15])  # best epoch 0.22
    promote(client, name, v1)
    v2 = add(0.21)
    p = promote(client, name, v2)
    assert not p.accepted and p.champion_value == pytest.approx(0.22)
