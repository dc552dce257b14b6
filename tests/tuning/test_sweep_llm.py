"""A real sweep of a method that tunes the LLM: `bridgerec tune` over two BIGRec trials (tiny
backbone, LoRA on Ray Train, titles through vLLM, grounding, gamma on validation) on its own 2-CPU
Ray, child runs under a parent in a real `mlflow server`. The grid pairs a learning rate that tunes
the adapter (3e-3) with one that leaves it where it started (1e-7): the chosen trial is picked on
validation only, and only it is tested, with the adapter and gamma it found.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BRIDGEREC = os.path.join(os.path.dirname(sys.executable), "bridgerec")
NAME, EXPERIMENT = "bigrec2", "tune-llm-test"
SPACE = """params:
  train.lr: {grid: [0.003, 0.0000001]}
search: random
num_samples: 1
scheduler: fifo
"""

pytestmark = pytest.mark.slow


def _args(space: str, work: str, uri: str) -> list[str]:
    return [
        "--space", space, f"work_dir={work}", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
        "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", "method.name=bigrec", "llm.model=tiny",
        "llm.engine=vllm", "llm.dtype=float32", "llm.max_model_len=512", "llm.vllm_multiprocessing=false",
        "llm.kv_cache_memory_bytes=134217728", "method.bigrec.train_samples=48", "method.bigrec.history_len=5",
        "method.bigrec.max_length=96", "method.bigrec.max_new_tokens=12", "method.bigrec.gammas=[0.0,2.0]",
        "train.num_workers=1", "train.epochs=1", "train.batch_size=8", "ray.num_cpus=2", "eval.ks=[10,20]",
        f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
    ]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_server):
    from mlflow.tracking import MlflowClient

    from bridgerec.tracking.runs import child_runs, find_sweep_run

    tmp = tmp_path_factory.mktemp("sweep_llm")
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "BRIDGEREC_VERBOSE")}
    done = subprocess.run([BRIDGEREC, "tune", "--name", NAME, *_args(str(space), str(tmp / "work"), mlflow_server)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=1200)
    client = MlflowClient(mlflow_server)
    parent = find_sweep_run(client, EXPERIMENT, NAME)
    children = child_runs(client, parent) if parent else []
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr, "client": client, "parent": parent,
            "children": [client.get_run(r.info.run_id) for r in children]}


def test_both_trials_complete_with_their_validation_metric_and_gamma(sweep):
    assert sweep["rc"] == 0, sweep["out"][-4000:] + sweep["err"][-4000:]
    children = sweep["children"]
    assert len(children) == 2, [r.info.run_name for r in children]
    for r in children:
        assert r.data.tags["bridgerec.trial_state"] == "completed" and r.info.status == "FINISHED"
        assert "best_valid_recall_at_20" in r.data.metrics and r.data.metrics["bigrec_gamma"] in (0.0, 2.0)
        assert os.path.isfile(os.path.join(r.data.tags["checkpoint_dir"], "adapter_config.json"))


def test_the_chosen_trial_is_picked_on_validation_and_only_it_sees_the_test_split(sweep):
    client, children = sweep["client"], sweep["children"]
    parent = client.get_run(sweep["parent"])
    valid = {r.info.run_id: r.data.metrics["best_valid_recall_at_20"] for r in children}
    chosen = parent.data.tags["best_run_id"]
    assert valid[chosen] == pytest.approx(max(valid.values()))
    assert parent.data.metrics["best_valid_recall_at_20"] == pytest.approx(valid[chosen])
    tested = [r.info.run_id for r in children if "test_recall_at_20" in client.get_run(r.info.run_id).data.metrics]
    assert tested == [chosen]
    run = client.get_run(chosen)
    # tested with the gamma it chose on validation, beside grounding alone and popularity
    assert {"test_grounding_only_recall_at_20", "baseline_popularity_test_recall_at_20"} <= set(run.data.metrics)
    assert parent.data.metrics["best_test_recall_at_20"] == pytest.approx(run.data.metrics["test_recall_at_20"])
    assert float(parent.data.params["best.train.lr"]) == float(run.data.params["train.lr"])
    assert parent.data.tags["best_model_uri"] == f"runs:/{chosen}/bigrec/adapter"
    logged = {os.path.basename(f.path) for f in client.list_artifacts(chosen, "bigrec")}
    assert {"adapter", "bigrec.json", "generated.json"} <= logged
