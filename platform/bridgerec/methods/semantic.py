"""LLM-side (semantic) embeddings of users and items for the alignment methods, cached on disk.

Inputs (declared in :data:`bridgerec.methods.inputs.INPUT_LOADERS`):

- ``user_semantic`` (U, ds) and ``item_semantic`` (I, ds) float32;
- ``train_interactions`` (2, E) int64: the (uid, iid) rows of the TRAINING split.

Where the semantic rows come from (``method.semantic.source``):

- ``profiles``: the text-encoder embeddings of the LLM profiles written by the augmentation stages
  (``profiles`` + ``text_embeddings``), read from a finished ``text_embeddings`` output of this
  dataset and encoder: ``method.semantic.embeddings_dir``, else the newest one under
  ``<augment root>/text_embeddings/`` (preferring one with profiles). The profiles are built from
  training interactions only (see :mod:`bridgerec.augment.profiles`).
- ``item_text``: item ``i`` -> ``encoder(item_text(title_i, text_i))`` (the ``item_text`` rows of
  such an output when there is one, else the encoder is run here); user ``u`` -> the mean of the
  item rows of ``u``'s training items (L2-normalised when ``encoder.normalize``); a user without
  training items keeps a zero row.
- ``auto``: the profile row where an entity has one, the ``item_text`` row otherwise.

The arrays are written once to ``<augment root>/semantic/<key>/`` (``user_semantic.npy``,
``item_semantic.npy``, ``meta.json``), ``key`` a content hash of the dataset, the encoder, the
source and the stage output read; training workers that start together take a file lock, so one
computes and the others read.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Optional

import numpy as np

from bridgerec.data.dataset import DatasetDir, read_parts

__all__ = ["semantic_embeddings", "user_semantic", "item_semantic", "train_interactions", "find_text_embeddings", "augment_root"]

_VERSION = 1
"""Bumped when the way the arrays are derived changes (part of the cache key)."""

_MEMO: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def augment_root(cfg, data: DatasetDir) -> str:
    return os.path.abspath(cfg.augment.output_root or os.path.join(data.path, "augment"))


def find_text_embeddings(cfg, data: DatasetDir) -> Optional[str]:
    """The finished ``text_embeddings`` output to read (see the module docstring), or None."""
    from bridgerec.llm.encoder import encoder_fingerprint

    if cfg.method.semantic.embeddings_dir:
        path = os.path.abspath(cfg.method.semantic.embeddings_dir)
        if not os.path.exists(os.path.join(path, "meta.json")):
            raise FileNotFoundError(f"method.semantic.embeddings_dir={path} is not a finished text_embeddings output (no meta.json)")
        return path
    fingerprint = encoder_fingerprint(cfg.encoder)
    found = []
    for meta_path in glob.glob(os.path.join(augment_root(cfg, data), "text_embeddings", "*", "meta.json")):
        with open(meta_path) as fh:
            meta = json.load(fh)
        if meta.get("dataset_content_hash") != data.content_hash or meta.get("config", {}).get("encoder") != fingerprint:
            continue
        found.append(("profiles" in meta.get("deps", {}), meta.get("created_at", ""), os.path.dirname(meta_path)))
    return max(found)[2] if found else None


def _rows(frame, kind: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """((n, d) float32 rows of ``kind`` by id, (n,) bool: which ids have a row) or None."""
    part = frame[frame["kind"] == kind]
    if part.empty:
        return None
    ids = part["id"].to_numpy(np.int64)
    emb = np.stack([np.asarray(v, np.float32) for v in part["embedding"]])
    out, has = np.zeros((n, emb.shape[1]), np.float32), np.zeros(n, bool)
    out[ids], has[ids] = emb, True
    return out, has


def _encode_items(cfg, data: DatasetDir, iids: np.ndarray) -> np.ndarray:
    """(len(iids), ds) encoder(title + text) of the given items (the text_embeddings stage's rows)."""
    from bridgerec.llm.encoder import TextEncoder, item_text

    items = data.items().set_index("iid").loc[iids]
    texts = [item_text(t, x) for t, x in zip(items["title"].astype(str), items["text"].fillna("").astype(str))]
    return TextEncoder(cfg.encoder).encode(texts)


def train_interactions(cfg, data: DatasetDir) -> np.ndarray:
    """(2, E) int64: uid and iid of every training row."""
    uids, iids = data.pairs("train")
    return np.stack([uids, iids])


def _user_means(item_sem: np.ndarray, data: DatasetDir, normalize: bool) -> np.ndarray:
    """(U, ds): each user's mean over the item rows of their TRAINING interactions."""
    uids, iids = data.pairs("train")
    sums = np.zeros((data.n_users, item_sem.shape[1]), np.float64)
    np.add.at(sums, uids, item_sem[iids])
    counts = np.bincount(uids, minlength=data.n_users)[:, None]
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    if normalize:
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        means = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)
    return means.astype(np.float32)


def _compute(cfg, data: DatasetDir, source: str, stage_dir: Optional[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(user (U, ds), item (I, ds), provenance counts)."""
    U, I = data.n_users, data.n_items
    frame = read_parts(stage_dir, columns=["kind", "id", "embedding"]) if stage_dir else None
    got = {k: _rows(frame, k, n) for k, n in (("user_profile", U), ("item_profile", I), ("item_text", I))} if frame is not None else {}
    if source == "profiles" and (got.get("user_profile") is None or got.get("item_profile") is None):
        raise ValueError(
            "method.semantic.source=profiles needs the user and item profile embeddings of the augmentation stages "
            "(augment.stages=[text_embeddings] with augment.text_embeddings.profiles=true); "
            + (f"{stage_dir} has none" if stage_dir else f"no finished text_embeddings output for this dataset and encoder "
               f"under {augment_root(cfg, data)}")
        )
    # item rows from item text: the stage's rows where present, the encoder for the rest
    if got.get("item_text") is not None:
        item_sem, has = got["item_text"]
    else:
        item_sem, has = None, np.zeros(I, bool)
    missing = np.flatnonzero(~has)
    if len(missing):
        enc = _encode_items(cfg, data, missing)
        item_sem = np.zeros((I, enc.shape[1]), np.float32) if item_sem is None else item_sem
        item_sem[missing] = enc
    user_sem = _user_means(item_sem, data, cfg.encoder.normalize)  # from item text, before any profile replaces a row
    counts = {"users_with_profile": 0, "items_with_profile": 0, "items_encoded_here": int(len(missing))}
    for kind, arr in (("user", user_sem), ("item", item_sem)):
        if source == "item_text" or got.get(f"{kind}_profile") is None:
            continue
        rows, present = got[f"{kind}_profile"]
        if rows.shape[1] != arr.shape[1]:
            raise ValueError(f"{kind} profile embeddings are {rows.shape[1]}-d but item-text ones {arr.shape[1]}-d")
        arr[present] = rows[present]
        counts[f"{kind}s_with_profile"] = int(present.sum())
    return user_sem, item_sem, counts


def semantic_embeddings(cfg, data: DatasetDir) -> tuple[np.ndarray, np.ndarray]:
    """(user (U, ds), item (I, ds)) float32 semantic embeddings, computed once per cache key."""
    from bridgerec.llm.encoder import encoder_fingerprint

    source = cfg.method.semantic.source
    stage_dir = find_text_embeddings(cfg, data)
    payload = {"version": _VERSION, "data": data.content_hash, "encoder": encoder_fingerprint(cfg.encoder),
               "normalize": cfg.encoder.normalize, "source": source, "stage_output": stage_dir}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    if (data.path, key) in _MEMO:
        return _MEMO[(data.path, key)]
    root = os.path.join(augment_root(cfg, data), "semantic")
    out = os.path.join(root, key)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process computes, the others wait and read
        try:
            if not os.path.exists(os.path.join(out, "meta.json")):
                t0 = time.time()
                user_sem, item_sem, counts = _compute(cfg, data, source, stage_dir)
                tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=root)
                np.save(os.path.join(tmp, "user_semantic.npy"), user_sem)
                np.save(os.path.join(tmp, "item_semantic.npy"), item_sem)
                with open(os.path.join(tmp, "meta.json"), "w") as fh:
                    json.dump({**payload, **counts, "seconds": round(time.time() - t0, 2),
                               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, fh, indent=2)
                shutil.rmtree(out, ignore_errors=True)  # an unfinished directory without meta.json
                os.replace(tmp, out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    arrays = (np.load(os.path.join(out, "user_semantic.npy")), np.load(os.path.join(out, "item_semantic.npy")))
    if arrays[0].shape[0] != data.n_users or arrays[1].shape[0] != data.n_items:
        raise ValueError(f"{out} holds {arrays[0].shape[0]} users / {arrays[1].shape[0]} items; "
                         f"the dataset has {data.n_users} / {data.n_items}")
    _MEMO[(data.path, key)] = arrays
    return arrays


def user_semantic(cfg, data: DatasetDir) -> np.ndarray:
    """Input ``user_semantic`` (U, ds) float32."""
    return semantic_embeddings(cfg, data)[0]


def item_semantic(cfg, data: DatasetDir) -> np.ndarray:
    """Input ``item_semantic`` (I, ds) float32."""
    return semantic_embeddings(cfg, data)[1]
