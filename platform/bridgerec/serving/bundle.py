"""Load a serving bundle: a logged recommender's artifacts plus its faiss indexes, from a URI.

A bundle URI is ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/<model id>``,
``runs:/<run id>/recommender`` or a local directory (an MLflow model directory, its
``artifacts/`` folder, or any folder holding the artifact files). The pyfunc recommender
(:mod:`bridgerec.tracking.pyfunc`) ships the embeddings, id maps, item table and seen items; the
index files (:mod:`bridgerec.retrieval.bundle`) sit beside them, or, for a run logged before they
existed, under the run's ``serving/`` artifacts written by ``bridgerec index build``. Nothing is
recomputed from training data: a bundle without its retrieval index is an error that says how to
build one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from bridgerec.retrieval.bundle import GROUNDING_INDEX, RETRIEVAL_INDEX, SERVING_META

__all__ = ["Catalog", "ModelVersion", "resolve_model", "bundle_dir", "pin_bundle", "open_bundle", "bundle_meta", "load_catalog",
           "load_vectors"]

_FILES = ("user_embeddings.npy", "item_embeddings.npy", "user_ids.parquet", "item_ids.parquet", "seen.npz")
HISTORY_FILE = "histories.npz"
"""Time-ordered known items per user (optional: bundles logged before it existed lack it)."""


@dataclass(frozen=True)
class ModelVersion:
    """Where a bundle came from: shown in every response."""

    uri: str
    run_id: Optional[str] = None
    name: Optional[str] = None
    version: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "run_id": self.run_id, "name": self.name, "version": self.version}


def resolve_model(uri: str, tracking_uri: Optional[str] = None) -> ModelVersion:
    """The registry name/version and source run of ``uri`` (a local directory has neither)."""
    if os.path.isdir(uri):
        return ModelVersion(uri=os.path.abspath(uri))
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    if uri.startswith("runs:/"):
        return ModelVersion(uri=uri, run_id=uri[len("runs:/"):].split("/")[0])
    if not uri.startswith("models:/"):
        raise ValueError(f"model URI {uri!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH "
                         "or a local bundle directory")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
        return ModelVersion(uri=uri, run_id=mv.run_id, name=name, version=str(mv.version))
    if "/" in rest:
        name, version = rest.split("/", 1)
        mv = client.get_model_version(name, version)
        return ModelVersion(uri=uri, run_id=mv.run_id, name=name, version=str(mv.version))
    model = client.get_logged_model(rest)
    return ModelVersion(uri=uri, run_id=model.source_run_id)


def _local_store(tracking_uri: Optional[str]) -> bool:
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    return not uri.startswith(("http://", "https://", "databricks"))


def pin_bundle(uri: str, tracking_uri: Optional[str] = None) -> dict[str, Any]:
    """What the app's replicas open, fixed once when the app is built: the version the URI points
    at now (an alias that moves later does not change a running app; redeploy to follow it), and,
    for a local MLflow store (SQLite or files, so a local cluster), the bundle downloaded once, so
    replicas never open the store at the same time (SQLite schema checks race)."""
    version = resolve_model(uri, tracking_uri)
    source = uri
    if os.path.isdir(uri) or _local_store(tracking_uri):
        source, _ = bundle_dir(uri, tracking_uri)
    elif version.name and version.version:
        source = f"models:/{version.name}/{version.version}"
    return {"source": source, "version": version.as_dict(), "tracking_uri": tracking_uri}


def open_bundle(pinned: dict[str, Any]) -> tuple[str, ModelVersion]:
    """The local bundle directory of a :func:`pin_bundle` result (downloaded here when remote)."""
    version = ModelVersion(**pinned["version"])
    if os.path.isdir(pinned["source"]):
        return _artifacts_dir(pinned["source"]), version
    root, _ = bundle_dir(pinned["source"], pinned.get("tracking_uri"))
    return root, version


def bundle_meta(pinned: dict[str, Any]) -> dict[str, Any]:
    """The ``serving.json`` of a :func:`pin_bundle` result (see :func:`_read_meta`)."""
    return _read_meta(open_bundle(pinned)[0])


def _read_meta(root: str) -> dict[str, Any]:
    """The bundle's ``serving.json`` (index settings; its grounding index dropped when the file is absent)."""
    meta_path = os.path.join(root, SERVING_META)
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    if "grounding" in meta and not os.path.exists(os.path.join(root, GROUNDING_INDEX)):
        meta.pop("grounding")
    return meta


def _artifacts_dir(root: str) -> str:
    for cand in (os.path.join(root, "artifacts"), root):
        if all(os.path.exists(os.path.join(cand, f)) for f in _FILES):
            return cand
    missing = [f for f in _FILES if not os.path.exists(os.path.join(root, "artifacts", f))]
    raise FileNotFoundError(f"{root} is not a bridgerec serving bundle: missing {', '.join(missing)} "
                            "(expected the pyfunc recommender logged by `bridgerec train`)")


def bundle_dir(uri: str, tracking_uri: Optional[str] = None, dst: Optional[str] = None) -> tuple[str, ModelVersion]:
    """A local directory holding every bundle file of ``uri`` (downloaded when remote), and its version."""
    version = resolve_model(uri, tracking_uri)
    if os.path.isdir(uri):
        root = _artifacts_dir(uri)
    else:
        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        dst = dst or tempfile.mkdtemp(prefix="bridgerec-bundle-")
        local = mlflow.artifacts.download_artifacts(artifact_uri=_artifact_location(uri, version, tracking_uri),
                                                    dst_path=dst, tracking_uri=tracking_uri)
        root = _artifacts_dir(local)
    if not os.path.exists(os.path.join(root, RETRIEVAL_INDEX)):
        _fetch_run_indexes(root, version, tracking_uri)
    return root, version


def _artifact_location(uri: str, version: ModelVersion, tracking_uri: Optional[str]) -> str:
    """Where the model's files are stored (``models:/`` URIs resolved with this tracking URI's
    registry, not the process-wide one)."""
    if not uri.startswith("models:/"):
        return uri
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    if version.name and version.version:
        return client.get_model_version_download_uri(version.name, version.version)
    return client.get_logged_model(uri[len("models:/"):]).artifact_location


def _fetch_run_indexes(root: str, version: ModelVersion, tracking_uri: Optional[str]) -> None:
    """Copy a run's ``serving/`` index files (from ``bridgerec index build``) next to the artifacts."""
    import shutil

    if version.run_id:
        import mlflow

        try:
            d = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="serving",
                                                    tracking_uri=tracking_uri)
        except Exception:  # noqa: BLE001 - no serving/ folder in the run: reported below
            d = None
        if d and os.path.exists(os.path.join(d, RETRIEVAL_INDEX)):
            for f in os.listdir(d):
                shutil.copy(os.path.join(d, f), os.path.join(root, f))
            return
    hint = f"bridgerec index build --run-id {version.run_id}" if version.run_id else "bridgerec index build --bundle DIR"
    raise FileNotFoundError(f"the bundle {version.uri} has no retrieval index ({RETRIEVAL_INDEX}); build one with `{hint}`")


@dataclass
class Catalog:
    """The id maps, titles, popularity and seen-item CSR of a bundle (small: every replica holds it)."""

    root: str
    version: ModelVersion
    user_ids: np.ndarray  # (U,) str, row = dense uid
    item_ids: np.ndarray  # (I,) str, row = dense iid
    titles: np.ndarray  # (I,) str
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    popularity: np.ndarray  # (I,) known-user count
    meta: dict = field(default_factory=dict)
    history_indptr: Optional[np.ndarray] = None  # (U+1,) time-ordered known items (histories.npz), if logged
    history_items: Optional[np.ndarray] = None
    _uid: Optional[pd.Series] = None
    _iid: Optional[pd.Series] = None

    def __post_init__(self) -> None:
        self._uid = pd.Series(np.arange(len(self.user_ids), dtype=np.int64), index=self.user_ids)
        self._iid = pd.Series(np.arange(len(self.item_ids), dtype=np.int64), index=self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def uid(self, user_id: str) -> Optional[int]:
        v = self._uid.get(str(user_id))
        return None if v is None else int(v)

    def iids(self, item_ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """Dense ids of ``item_ids`` and the ids that are not in the catalog."""
        got = self._iid.reindex([str(i) for i in item_ids]).to_numpy()
        unknown = [str(i) for i, v in zip(item_ids, got) if pd.isna(v)]
        return np.asarray([int(v) for v in got if not pd.isna(v)], dtype=np.int64), unknown

    def seen(self, uid: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[uid] : self.seen_indptr[uid + 1]]

    def history(self, uid: int, last: Optional[int] = None) -> np.ndarray:
        """The user's known items, oldest first (the ``last`` most recent ones when given). A bundle
        logged before ``histories.npz`` existed has no order: its seen items (by id) stand in."""
        if self.history_indptr is None:
            row = self.seen(uid)
        else:
            row = self.history_items[self.history_indptr[uid] : self.history_indptr[uid + 1]]
        return row if last is None else row[max(0, len(row) - int(last)):]

    @property
    def has_grounding(self) -> bool:
        return "grounding" in self.meta


def load_catalog(root: str, version: ModelVersion) -> Catalog:
    users = pd.read_parquet(os.path.join(root, "user_ids.parquet")).sort_values("uid")
    items = pd.read_parquet(os.path.join(root, "item_ids.parquet")).sort_values("iid")
    seen = np.load(os.path.join(root, "seen.npz"))
    indptr, indices = seen["indptr"].astype(np.int64), seen["indices"].astype(np.int64)
    item_ids = items["item_id"].astype(str).to_numpy()
    meta = _read_meta(root)
    hist_path = os.path.join(root, HISTORY_FILE)
    hist = np.load(hist_path) if os.path.exists(hist_path) else None
    return Catalog(root=root, version=version, user_ids=users["user_id"].astype(str).to_numpy(), item_ids=item_ids,
                   titles=items["title"].astype(str).to_numpy() if "title" in items else item_ids,
                   seen_indptr=indptr, seen_indices=indices,
                   popularity=np.bincount(indices, minlength=len(item_ids)).astype(np.int64), meta=meta,
                   history_indptr=None if hist is None else hist["indptr"].astype(np.int64),
                   history_items=None if hist is None else hist["items"].astype(np.int64))


def load_vectors(root: str) -> tuple[np.ndarray, np.ndarray]:
    """(user embeddings, item embeddings), float32."""
    return (np.load(os.path.join(root, "user_embeddings.npy")).astype(np.float32, copy=False),
            np.load(os.path.join(root, "item_embeddings.npy")).astype(np.float32, copy=False))
