"""A trained domain model as an MLflow pyfunc top-k recommender (registered, loadable anywhere).

The model is logged as *models-from-code*: this very file is copied into the MLflow model and
executed on load (MLflow 3.17 refuses to unpickle a cloudpickled ``PythonModel`` unless
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``). Executed that way it needs only mlflow, numpy,
pandas and pyarrow — no torch, no Ray, no bridgerec — so ``mlflow.pyfunc.load_model(uri)`` works
in a plain Python process. Everything that needs bridgerec is imported inside
:func:`log_pyfunc_model`.

Artifacts of the logged model (``artifacts/`` inside the MLflow model)::

    user_embeddings.npy   (U, d) float32 final user representations (row = dense uid); a
                          sequence model encodes each user's full known history
    item_embeddings.npy   (I, d) float32 final item representations (row = dense iid)
    user_ids.parquet      uid, user_id (original id)
    item_ids.parquet      iid, item_id (original id), title
    seen.npz              CSR (indptr (U+1,), indices) of each user's known items — every
                          interaction in the train, valid and test splits — sorted
    histories.npz         CSR (indptr (U+1,), items) of the same interactions in time order
                          (what LLM strategies prompt with and sequence models condition on);
                          not read by the pyfunc itself
    domain_model.json     the domain model's config and sizes (:mod:`bridgerec.models.snapshot`)
    domain_model.pt       a sequence model's weights, so serving can encode a history it is sent
                          (optional; torch; not read by the pyfunc itself)

Prediction: input DataFrame with ``user_id`` (str, original id) and optional ``k`` (int, per row;
default ``model_config["k"]``); output DataFrame ``user_id, rank (1..k), item_id, title, score``,
the top-k items by inner product with every item the user is known to have interacted with
excluded (at serving time all of train, valid and test is history). Users with fewer than k
unseen items get fewer rows.

Unknown user ids: by default (``model_config["unknown_user"] = "error"``) the whole call raises a
``ValueError`` that names them (a silent fallback hides id-mapping bugs). With ``"popular"`` they
get the most popular items instead (score = number of users known to have interacted with the
item). Override at load time: ``mlflow.pyfunc.load_model(uri, model_config={"unknown_user": "popular"})``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

if TYPE_CHECKING:  # never imported when MLflow executes this file on load
    from mlflow.models.model import ModelInfo

    from bridgerec.config import Config
    from bridgerec.data.dataset import DatasetDir
    from bridgerec.models.base import DomainModel

__all__ = ["TopKRecommender", "known_pairs", "log_pyfunc_model", "recommender_signature", "seen_csr", "ARTIFACT_FILES"]

ARTIFACT_FILES = {
    "user_embeddings": "user_embeddings.npy",
    "item_embeddings": "item_embeddings.npy",
    "user_ids": "user_ids.parquet",
    "item_ids": "item_ids.parquet",
    "seen": "seen.npz",
    "histories": "histories.npz",
}
"""Artifact key (``context.artifacts``) -> file name."""

UNKNOWN_USER_POLICIES = ("error", "popular")
OUTPUT_COLUMNS = ["user_id", "rank", "item_id", "title", "score"]
_CHUNK_FLOATS = 1 << 25  # users x items scored per matrix product (128 MiB of float32)


def seen_csr(uids: np.ndarray, iids: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) CSR of the unique (uid, iid) pairs, items sorted within each user."""
    from bridgerec._csr import CSR  # at log time only: MLflow loads this file without bridgerec

    csr = CSR.from_pairs(np.asarray(uids, dtype=np.int64), np.asarray(iids, dtype=np.int64), n_users)
    return csr.indptr, csr.indices


def known_pairs(data: "DatasetDir") -> tuple[np.ndarray, np.ndarray]:
    """(uids, iids) of every known interaction: the train, valid and test splits together."""
    parts = [data.pairs(split) for split in ("train", "valid", "test")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class TopKRecommender(PythonModel):
    """Inner-product top-k over exported embeddings, excluding each user's known items."""

    def load_context(self, context) -> None:
        cfg = dict(context.model_config or {})
        self.default_k = int(cfg.get("k", 10))
        self.unknown_user = str(cfg.get("unknown_user", "error"))
        if self.unknown_user not in UNKNOWN_USER_POLICIES:
            raise ValueError(f"model_config unknown_user={self.unknown_user!r}; expected one of {UNKNOWN_USER_POLICIES}")
        self.exclude_seen = bool(cfg.get("exclude_seen", True))
        a = context.artifacts
        self.user_emb = np.load(a["user_embeddings"]).astype(np.float32, copy=False)
        self.item_emb = np.load(a["item_embeddings"]).astype(np.float32, copy=False)
        users = pd.read_parquet(a["user_ids"]).sort_values("uid")
        items = pd.read_parquet(a["item_ids"]).sort_values("iid")
        if len(users) != len(self.user_emb) or len(items) != len(self.item_emb):
            raise ValueError(
                f"artifacts disagree: {len(users)} user ids vs {len(self.user_emb)} user embeddings, "
                f"{len(items)} item ids vs {len(self.item_emb)} item embeddings"
            )
        self.uid_of = pd.Series(users["uid"].to_numpy(np.int64), index=users["user_id"].astype(str).to_numpy())
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self.titles = items["title"].astype(str).to_numpy() if "title" in items else self.item_ids
        seen = np.load(a["seen"])
        self.indptr, self.indices = seen["indptr"].astype(np.int64), seen["indices"].astype(np.int64)
        counts = np.bincount(self.indices, minlength=len(self.item_ids)).astype(np.float64)
        self.popular = np.lexsort((np.arange(len(counts)), -counts))  # by count desc, iid asc
        self.popular_counts = counts[self.popular]

    # ------------------------------------------------------------------------------ predict
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "user_id" not in df.columns:
            raise ValueError(f"input needs a 'user_id' column; got columns {list(df.columns)}")
        user_ids = df["user_id"].astype(str).to_numpy()
        ks = self._ks(df, params)
        uids = self.uid_of.reindex(user_ids).to_numpy()
        known = ~pd.isna(uids)
        if not known.all() and self.unknown_user == "error":
            unknown = list(dict.fromkeys(user_ids[~known]))
            shown = ", ".join(repr(u) for u in unknown[:20]) + (f" (+{len(unknown) - 20} more)" if len(unknown) > 20 else "")
            raise ValueError(
                f"unknown user_id(s): {shown}; this model knows {len(self.uid_of)} users "
                "(load it with model_config={'unknown_user': 'popular'} for a popularity fallback)"
            )
        uids = np.where(known, uids, -1).astype(np.int64)
        parts: list[pd.DataFrame] = []
        chunk = max(1, min(1024, _CHUNK_FLOATS // max(1, len(self.item_ids))))
        for start in range(0, len(df), chunk):
            sl = slice(start, start + chunk)
            parts.append(self._topk(user_ids[sl], uids[sl], ks[sl]))
        if not parts:
            return self._frame([], [], [], [])
        return pd.concat(parts, ignore_index=True)

    def _ks(self, df: pd.DataFrame, params: dict[str, Any] | None) -> np.ndarray:
        default = int((params or {}).get("k", self.default_k))
        if "k" in df.columns:
            k = pd.to_numeric(df["k"], errors="raise").fillna(default).astype(np.int64).to_numpy()
        else:
            k = np.full(len(df), default, dtype=np.int64)
        if (k < 1).any():
            raise ValueError(f"k must be >= 1; got {sorted(set(k[k < 1].tolist()))}")
        return np.minimum(k, len(self.item_ids))

    def _topk(self, user_ids: np.ndarray, uids: np.ndarray, ks: np.ndarray) -> pd.DataFrame:
        known = uids >= 0
        kmax = int(ks.max())
        n_items = len(self.item_ids)
        scores = np.empty((len(uids), n_items), dtype=np.float32)
        if known.any():
            scores[known] = self.user_emb[uids[known]] @ self.item_emb.T
        if (~known).any():
            # popularity fallback: score = known-user count; ranked by count desc, iid asc
            pop = np.empty(n_items, dtype=np.float32)
            pop[self.popular] = self.popular_counts
            scores[~known] = pop
        if self.exclude_seen and known.any():
            rows = np.flatnonzero(known)
            starts, ends = self.indptr[uids[rows]], self.indptr[uids[rows] + 1]
            lens = ends - starts
            r = np.repeat(rows, lens)
            c = self.indices[np.repeat(starts, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))]
            scores[r, c] = -np.inf
        # top kmax per row: argpartition, then order by (score desc, iid asc)
        if kmax < n_items:
            cand = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
        else:
            cand = np.broadcast_to(np.arange(n_items), scores.shape).copy()
        cand_scores = np.take_along_axis(scores, cand, axis=1)
        order = np.lexsort((cand, -cand_scores), axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        cand_scores = np.take_along_axis(cand_scores, order, axis=1)
        rank = np.broadcast_to(np.arange(1, kmax + 1), cand.shape)
        keep = (rank <= ks[:, None]) & np.isfinite(cand_scores)
        row_idx = np.broadcast_to(np.arange(len(uids))[:, None], cand.shape)[keep]
        iids = cand[keep]
        return self._frame(user_ids[row_idx], rank[keep], iids, cand_scores[keep])

    def _frame(self, user_ids, ranks, iids, scores) -> pd.DataFrame:
        iids = np.asarray(iids, dtype=np.int64)
        return pd.DataFrame(
            {
                "user_id": pd.Series(np.asarray(user_ids, dtype=object), dtype=object),
                "rank": np.asarray(ranks, dtype=np.int64),
                "item_id": pd.Series(self.item_ids[iids] if len(iids) else [], dtype=object),
                "title": pd.Series(self.titles[iids] if len(iids) else [], dtype=object),
                "score": np.asarray(scores, dtype=np.float64),
            },
            columns=OUTPUT_COLUMNS,
        )


# ------------------------------------------------------------------------------------ logging
def recommender_signature():
    """Input ``user_id: string``, ``k: long`` (optional); output ``user_id, rank, item_id, title, score``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "user_id"), ColSpec(DataType.long, "k", required=False)]),
        outputs=Schema(
            [
                ColSpec(DataType.string, "user_id"),
                ColSpec(DataType.long, "rank"),
                ColSpec(DataType.string, "item_id"),
                ColSpec(DataType.string, "title"),
                ColSpec(DataType.double, "score"),
            ]
        ),
    )


def _pip_requirements() -> list[str]:
    import pyarrow

    return [f"numpy=={np.__version__}", f"pandas=={pd.__version__}", f"pyarrow=={pyarrow.__version__}"]


def log_pyfunc_model(
    model: "DomainModel",
    data: "DatasetDir",
    cfg: "Config | None" = None,
    registered_name: str | None = None,
    k: int = 10,
    *,
    name: str = "recommender",
    alias: str | None = "champion",
    unknown_user: str = "error",
) -> "ModelInfo":
    """Log ``model`` as a :class:`TopKRecommender` pyfunc inside the active MLflow run.

    ``registered_name`` registers it in the model registry (a new version) and, when ``alias`` is
    given, points ``models:/<registered_name>@<alias>`` at that version. Returns the
    ``ModelInfo`` (``model_uri`` is ``models:/<model_id>``; ``registered_model_version`` is set
    when registered). ``cfg`` is stored (as ``config.yaml`` beside the artifacts) when given.
    The embeddings and the excluded ("seen") items come from every known interaction of each
    user (train, valid and test). A domain model that conditions on histories also leaves its
    weights, for serving users known only by a history (:func:`~bridgerec.models.snapshot.save_domain_model`).
    """
    if unknown_user not in UNKNOWN_USER_POLICIES:
        raise ValueError(f"unknown_user={unknown_user!r}; expected one of {UNKNOWN_USER_POLICIES}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if mlflow.active_run() is None:
        raise RuntimeError("log_pyfunc_model needs an active MLflow run (use it inside tracking.mlflow_run)")
    import yaml

    from bridgerec.models import SERVING_HISTORY, conditioned_on, histories_for
    from bridgerec.models.snapshot import save_domain_model

    d = tempfile.mkdtemp(prefix="bridgerec-pyfunc-")
    try:
        histories = histories_for(data, SERVING_HISTORY)  # (indptr (U+1,), items) in time order
        with conditioned_on(model, histories):
            users_emb, items_emb = model.export_embeddings()
        paths = {key: os.path.join(d, fname) for key, fname in ARTIFACT_FILES.items()}
        users_emb = users_emb.float().numpy()
        np.save(paths["user_embeddings"], users_emb)
        np.save(paths["item_embeddings"], items_emb.float().numpy())
        users = data.users()[["uid", "user_id"]]
        items = data.items()[["iid", "item_id", "title"]]
        users.to_parquet(paths["user_ids"], index=False)
        items.to_parquet(paths["item_ids"], index=False)
        # the same events as known_pairs(data), already read: every split's (uid, iid)
        owners = np.repeat(np.arange(data.n_users, dtype=np.int64), np.diff(histories[0]))
        indptr, indices = seen_csr(owners, histories[1], n_users=data.n_users)
        np.savez(paths["seen"], indptr=indptr, indices=indices)
        np.savez(paths["histories"], indptr=histories[0], items=histories[1])
        paths.update(save_domain_model(d, model, users_emb, histories, cfg.model if cfg else None))
        paths.update(_serving_indexes(os.path.join(d, "serving"), items_emb.float().numpy(), items["title"].astype(str).tolist(), cfg))
        if cfg is not None:
            paths["config"] = os.path.join(d, "config.yaml")
            with open(paths["config"], "w") as fh:
                yaml.safe_dump(cfg.model_dump(mode="json"), fh, sort_keys=False)
        example = pd.DataFrame({"user_id": users["user_id"].astype(str).head(2).tolist(), "k": [k] * min(2, len(users))})
        example["k"] = example["k"].astype(np.int64)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=os.path.abspath(__file__),
            artifacts=paths,
            model_config={"k": int(k), "unknown_user": unknown_user, "exclude_seen": True},
            signature=recommender_signature(),
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_name,
            tags={"bridgerec.model": type(model).__name__, "bridgerec.dataset_hash": data.content_hash},
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if registered_name and alias and info.registered_model_version is not None:
        mlflow.MlflowClient().set_registered_model_alias(registered_name, alias, str(info.registered_model_version))
    return info


def _serving_indexes(out_dir: str, item_emb: np.ndarray, titles: list[str], cfg: "Config | None") -> dict[str, str]:
    """The serving bundle's faiss indexes (retrieval, and grounding when ``retrieval.grounding_index``),
    as artifact key -> path (the key is the file name, so the server finds them by name)."""
    from bridgerec.retrieval.bundle import write_indexes
    from bridgerec.retrieval.config import RetrievalConfig

    rcfg = cfg.retrieval if cfg is not None else RetrievalConfig()
    encode = settings = None
    if cfg is not None and rcfg.grounding_index:
        from bridgerec.llm.encoder import TextEncoder

        encoder = TextEncoder(cfg.encoder)
        encode, settings = encoder.encode, cfg.encoder.model_dump(mode="json")
    return write_indexes(out_dir, item_emb, titles, rcfg, encode, settings)


# When MLflow executes this file to load (or log) the model, it runs under a generated module
# name; register the model object then. Imported as part of the package, this does nothing.
if __name__ != "bridgerec.tracking.pyfunc":
    mlflow.models.set_model(TopKRecommender())
