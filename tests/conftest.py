"""Shared fixtures: one Ray cluster per test session and small prepared datasets."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri():
    """``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI in os.environ (for subprocesses),
    which the config's tracking URI reads: a test pointing MLflow at a server must not send the
    next test's runs there."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow

        mlflow.set_tracking_uri(before)  # None unsets the variable


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (started once, shut down at the end)."""
    import ray

    from bridgerec.config import RayConfig
    from bridgerec.runtime import init_ray

    init_ray(RayConfig(num_cpus=8))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server():
    """`mlflow server` on a free port with a SQLite store and proxied artifacts; yields its URI."""
    from support_servers import mlflow_server as start

    with start() as uri:
        yield uri


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bridgerec")


@pytest.fixture(scope="session")
def tiny_config(session_dir):
    """Config for the tiny synthetic preset with a session work dir (k-core 3 keeps more users)."""
    from bridgerec.config import load_config

    return load_config(
        None,
        [
            f"work_dir={session_dir}/work",
            "data.name=synthetic-tiny",
            "data.source.synthetic.preset=tiny",
            "data.preprocess.kcore_user=3",
            "data.preprocess.kcore_item=3",
        ],
    )


@pytest.fixture(scope="session")
def tiny_dataset(ray_session, tiny_config):
    """The tiny synthetic dataset prepared once per session; returns its directory."""
    from bridgerec.data.prepare import prepare_dataset

    return prepare_dataset(tiny_config.data, tiny_config.dataset_dir(), log=lambda m: None).path


LLM_TEST_OVERRIDES = {
    "dtype": "float32",
    "max_model_len": 512,
    "vllm_multiprocessing": False,
    "kv_cache_memory_bytes": 64 * 2**20,
    "hf_batch_size": 8,
    "tiny": {"warmup_steps": 40},
}
"""The LLM settings of the LLM and augmentation tests (one copy, so the tiny backbone is shared on
disk): in-process vLLM with an explicit 64 MiB KV cache, float32 so both engines decode alike."""


@pytest.fixture(scope="session")
def llm_config(tiny_config):
    """The session tiny config with the test LLM settings."""
    cfg = tiny_config.model_copy(deep=True)
    cfg.llm = cfg.llm.model_validate({**cfg.llm.model_dump(), **LLM_TEST_OVERRIDES,
                                      "tiny": {**cfg.llm.tiny.model_dump(), **LLM_TEST_OVERRIDES["tiny"]}})
    return cfg


@pytest.fixture(scope="session")
def llama4rec_domain(tiny_dataset, tmp_path_factory):
    """Llama4Rec's domain model on the tiny world, with signal: item vectors from the training
    co-occurrence (SVD, 8 dimensions), user vectors the mean of their training items'."""
    import numpy as np

    from bridgerec.data.dataset import DatasetDir

    dataset = DatasetDir(tiny_dataset)
    u, i = dataset.pairs("train")
    m = np.zeros((dataset.n_users, dataset.n_items), np.float32)
    m[u, i] = 1.0
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    items = (vt[:8].T * np.sqrt(s[:8])).astype(np.float32)
    users = (m @ items / np.maximum(m.sum(1, keepdims=True), 1)).astype(np.float32)
    path = tmp_path_factory.mktemp("llama4rec") / "domain.npz"
    np.savez(path, user_emb=users, item_emb=items)
    return users, items, str(path)


@pytest.fixture(scope="session")
def llama4rec_cfg(llm_config, llama4rec_domain):
    """A small Llama4Rec run: LoRA on every projection of the tiny backbone, 160 listwise examples
    of 5 candidates, 2 DDP workers, 4 epochs (its rankings parse; tests/llm/test_llama4rec.py)."""
    from bridgerec.config import Config

    return Config.model_validate({
        **llm_config.model_dump(), "run_name": "llama4rec-workflow", "tracking": {"enabled": False},
        "llm": {**llm_config.llm.model_dump(), "engine": "hf",
                "lora": {**llm_config.llm.lora.model_dump(), "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                                "gate_proj", "up_proj", "down_proj"]}},
        "method": {"name": "llama4rec", "llama4rec": {"domain_run": llama4rec_domain[2], "train_samples": 160,
                                                      "n_candidates": 5, "history_len": 5, "max_prompt_tokens": 200,
                                                      "max_new_tokens": 24, "alpha_grid": [0.1, 0.5, 0.9],
                                                      "select_metric": "ndcg@5"}},
        "train": {**llm_config.train.model_dump(), "num_workers": 2, "strategy": "ddp", "batch_size": 8, "epochs": 4,
                  "lr": 1e-2},
        "eval": {**llm_config.eval.model_dump(), "ks": [3, 5, 20]},
    })


@pytest.fixture(scope="session")
def llama4rec_run(ray_session, llama4rec_cfg, tiny_dataset):
    """(the tuned run's result, its log lines), once per session: the method's tests and the
    serving tests (which serve its export) share it."""
    from bridgerec.data.dataset import DatasetDir
    from bridgerec.workflows.llama4rec import run_llama4rec

    lines = []
    return run_llama4rec(llama4rec_cfg, DatasetDir(tiny_dataset), log=lines.append), lines
