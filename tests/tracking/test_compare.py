"""`bridgerec compare` over runs in a real `mlflow server`: the table's rows and values are the
runs' own, sorted; CSV and Markdown agree with it; every plot is a PNG with one series per method
(parameter panels) or per run (slices, learning curves). A sweep's compare is tested on a real
sweep in tests/tuning/test_sweep.py."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from bridgerec.cli import main

RUNS = [  # method, lr, test recall@20, its long-tail-user slice, per-epoch validation
    ("base", 0.01, 0.20, 0.15, [0.10, 0.18, 0.19]),
    ("rlmrec-con", 0.02, 0.24, 0.21, [0.12, 0.20, 0.23]),
    ("darec", 0.005, 0.17, 0.11, [0.09, 0.14]),
]


@pytest.fixture(scope="module")
def runs(mlflow_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = f"compare-{uuid.uuid4().hex[:6]}"
    exp_id = client.create_experiment(experiment)
    ids = []
    for method, lr, recall, tail, curve in RUNS:
        run = client.create_run(exp_id, run_name=f"{method}-run")
        rid = run.info.run_id
        for k, v in {"method.name": method, "model.name": "lightgcn", "train.lr": lr, "train.epochs": 3,
                     "work_dir": f"/tmp/{method}"}.items():
            client.log_param(rid, k, v)
        client.log_metric(rid, "test_recall_at_20", recall)
        client.log_metric(rid, "test_ndcg_at_20", recall / 2)
        client.log_metric(rid, "test_long_tail_users/recall_at_20", tail)
        for step, v in enumerate(curve, start=1):
            client.log_metric(rid, "valid_recall_at_20", v, step=step)
        client.set_terminated(rid)
        ids.append(rid)
    return client, experiment, ids


def test_table_rows_match_the_runs_sorted_by_the_metric(runs):
    from bridgerec.tracking.compare import collect

    client, experiment, ids = runs
    c = collect(client, experiment=experiment, split="test", k=20)
    assert list(c.frame["method"]) == ["rlmrec-con", "base", "darec"]  # by test recall@20, descending
    assert list(c.frame["recall@20"]) == pytest.approx([0.24, 0.20, 0.17])
    assert list(c.frame["tail users recall@20"]) == pytest.approx([0.21, 0.15, 0.11])
    assert c.frame["cold items recall@20"].isna().all()  # not logged: n/a, not 0
    assert c.param_cols == ["train.lr"]  # what differs; paths (work_dir) are never key parameters
    assert set(c.frame["run"]) == set(ids)
    by_ndcg = collect(client, run_ids=ids[:2], split="test", k=20, sort="ndcg@20")
    assert list(by_ndcg.frame["method"]) == ["rlmrec-con", "base"]


def test_cli_writes_csv_markdown_and_pngs(runs, tmp_path, mlflow_server, capsys):
    from PIL import Image

    client, experiment, ids = runs
    out = tmp_path / "cmp"
    rc = main(["compare", "--experiment", experiment, "--tracking-uri", mlflow_server, "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3 run(s), test split, sorted by recall@20" in printed and "rlmrec-con" in printed
    csv = pd.read_csv(out / "compare.csv")
    assert list(csv["recall@20"]) == pytest.approx([0.24, 0.20, 0.17])
    md = (out / "compare.md").read_text()
    assert md.count("\n| ") == 3 + 1 and "| 0.2400 |" in md and "n/a" in md
    series = {}
    for name in ("params.png", "slices.png", "curves.png"):
        img = Image.open(out / name)
        img.verify()
        series[name] = json.loads(Image.open(out / name).text["Series"])
    assert series["params.png"] == [["base", "darec", "rlmrec-con"]]  # one panel (train.lr), one series per method
    assert [len(s) for s in series["slices.png"]] == [3]  # one bar series per run
    assert [len(s) for s in series["curves.png"]] == [3]  # one line per run


def test_unknown_inputs_are_named(runs, mlflow_server, capsys):
    client, experiment, ids = runs
    assert main(["compare", "--experiment", "no-such-exp", "--tracking-uri", mlflow_server]) == 2
    assert "--experiment no-such-exp: no such MLflow experiment" in capsys.readouterr().err
    assert main(["compare", "--experiment", experiment, "--sort", "recall@7", "--tracking-uri", mlflow_server]) == 2
    assert "--sort recall@7: not a column" in capsys.readouterr().err
    assert main(["compare", "--sweep", "nope", "--experiment", experiment, "--tracking-uri", mlflow_server]) == 2
    assert "--sweep nope: neither a run id nor a sweep name" in capsys.readouterr().err
