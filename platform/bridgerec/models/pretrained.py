"""A trained domain model's outputs, read back from where ``bridgerec train`` logged them.

``local_model_source`` turns a ``runs:/`` or ``models:/`` URI into a local directory (one MLflow
download); ``load_domain_embeddings`` reads the (user, item) embeddings from that directory, a
downloaded ``model/`` artifact directory or an ``.npz``. The augmentation stages (``prompt_aug``),
BIGRec's domain reweighting and BDLM's preload all read domain models through these two.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["local_model_source", "load_domain_embeddings", "embeddings_dir"]


def local_model_source(src: str, tracking_uri: str | None = None) -> str:
    """``src`` on local disk: a ``runs:/...`` or ``models:/...`` URI is downloaded through MLflow
    at ``tracking_uri``; any other path is returned as it is."""
    if not src.startswith(("runs:/", "models:/")):
        return src
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.artifacts.download_artifacts(artifact_uri=src)


def embeddings_dir(path: str) -> str:
    """The folder of ``path`` that holds the embeddings: a pyfunc recommender's directory (what
    ``models:/...`` downloads) keeps them, and the domain model's description and weights, under
    ``artifacts/``; any other path is returned as it is."""
    inner = os.path.join(path, "artifacts")
    if os.path.isdir(path) and os.path.exists(os.path.join(inner, "user_embeddings.npy")):
        return inner
    return path


def load_domain_embeddings(src: str, tracking_uri: str | None = None,
                           key: str = "augment.prompt_aug.embeddings") -> tuple[np.ndarray, np.ndarray]:
    """(user_emb, item_emb) of a trained domain model, from any of:

    - ``runs:/<run id>/model`` or ``models:/<name>@<alias>`` (a run logged by ``bridgerec train``;
      downloaded through MLflow at ``tracking_uri``);
    - a directory with ``user_embeddings.npy`` and ``item_embeddings.npy`` (a downloaded ``model/``
      artifact directory), or with them under ``artifacts/`` (a pyfunc recommender);
    - an ``.npz`` with ``user_emb`` and ``item_emb``.

    Errors name ``key``, the config key ``src`` came from.
    """
    src = embeddings_dir(local_model_source(src, tracking_uri))
    if os.path.isdir(src):
        files = [os.path.join(src, f"{side}_embeddings.npy") for side in ("user", "item")]
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise FileNotFoundError(f"{key}: {src} has no {', '.join(map(os.path.basename, missing))} "
                                    "(expected a trained run's model/ artifacts)")
        return np.load(files[0]), np.load(files[1])
    if not os.path.exists(src):
        raise FileNotFoundError(f"{key}: {src} does not exist")
    with np.load(src) as z:
        missing = [k for k in ("user_emb", "item_emb") if k not in z.files]
        if missing:
            raise ValueError(f"{key}: {src} lacks arrays {missing} (has {z.files})")
        return z["user_emb"], z["item_emb"]
