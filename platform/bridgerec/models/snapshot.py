"""The domain model behind a serving bundle's vectors, rebuilt there without the dataset, so that
serving can run a sequence model's own forward pass for a user it knows only by a history.

Two files beside the exported embeddings (:func:`save_domain_model` writes them at log time):

``domain_model.json`` (every model)
    ``model`` (the ``model`` config section it was built from, or null), ``n_users``, ``n_items``,
    ``conditions_on_history`` (it has :attr:`~bridgerec.models.base.DomainModel.histories`),
    ``weights`` (``"domain_model.pt"`` or null) and, when a history model's weights were not
    written, ``reason``.
``domain_model.pt`` (a model that conditions on histories)
    ``torch.save`` of its plain CPU state dict, loaded with ``weights_only=True``.

The weights are written only after the model rebuilt from these files (:func:`load_domain_model`)
reproduces exported user vectors with :meth:`~bridgerec.models.base.DomainModel.embed_histories`
over the users' serving histories; when it does not (no config, a method that transforms the
domain model's vectors, a model without ``embed_histories``), ``reason`` says why and serving
keeps the mean of the history's item embeddings. Torch is imported inside the functions:
reading the description (:func:`read_description`) does not import it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np

__all__ = ["DESCRIPTION_FILE", "WEIGHTS_FILE", "conditions_on_history", "domain_model_of", "load_domain_model",
           "names_sequence_model", "read_description", "save_domain_model"]

DESCRIPTION_FILE = "domain_model.json"
WEIGHTS_FILE = "domain_model.pt"
_CHECK_USERS = 256
"""Users whose exported vectors the rebuilt model must reproduce before its weights are kept."""


def domain_model_of(module: Any):
    """The one domain model inside ``module`` (``module`` itself, or the one a method wraps), or None."""
    from bridgerec.models.base import DomainModel

    found = [m for m in module.modules() if isinstance(m, DomainModel)]
    return found[0] if len(found) == 1 else None


def read_description(directory: str) -> Optional[dict]:
    """The ``domain_model.json`` of ``directory``, or None (a bundle logged before it existed)."""
    path = os.path.join(directory, DESCRIPTION_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def names_sequence_model(directory: str) -> bool:
    """Whether the ``config.yaml`` of ``directory`` (a bundle or a run's ``model/`` artifacts, which
    have no :data:`DESCRIPTION_FILE`) names a model with a forward pass over histories."""
    path = os.path.join(directory, "config.yaml")
    if not os.path.exists(path):
        return False
    import yaml

    with open(path) as fh:
        name = ((yaml.safe_load(fh) or {}).get("model") or {}).get("name")
    from bridgerec.models.base import DomainModel
    from bridgerec.models.registry import model_class

    try:
        cls = model_class(str(name))
    except ValueError:
        return False
    return cls.embed_histories is not DomainModel.embed_histories


def conditions_on_history(directory: str) -> bool:
    """Whether the domain model whose outputs ``directory`` holds conditions on histories (its
    exported user vectors then read every known item): its description says so, or, without one,
    its ``config.yaml`` names such a model."""
    desc = read_description(directory)
    return bool(desc.get("conditions_on_history")) if desc is not None else names_sequence_model(directory)


def load_domain_model(directory: str, histories: Optional[tuple[np.ndarray, np.ndarray]] = None):
    """The model saved in ``directory``, on CPU in eval mode, conditioned on ``histories`` (CSR;
    default: empty ones, enough for :meth:`embed_histories`)."""
    import torch

    from bridgerec.models.config import ModelConfig
    from bridgerec.models.registry import build_model

    desc = read_description(directory)
    if not desc or not desc.get("weights"):
        raise FileNotFoundError(f"{directory} holds no domain model weights ({DESCRIPTION_FILE}: {desc})")
    n_users, n_items = int(desc["n_users"]), int(desc["n_items"])
    if histories is None:
        histories = (np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    model = build_model(ModelConfig(**desc["model"]), n_users, n_items, histories=histories)
    state = torch.load(os.path.join(directory, desc["weights"]), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def save_domain_model(directory: str, module: Any, user_vectors: np.ndarray, histories: tuple[np.ndarray, np.ndarray],
                      model_cfg: Any = None) -> dict[str, str]:
    """Write the description of the domain model inside ``module`` and, for a model that
    conditions on histories, its weights, once the rebuilt model reproduces ``user_vectors``
    ((U, d), what was exported) from ``histories`` (the CSR they were computed from).
    ``model_cfg`` stands in for a model built without :func:`~bridgerec.models.registry.build_model`.
    Returns artifact key -> path of the files written."""
    import torch

    domain = domain_model_of(module)
    if domain is None:
        return {}
    cfg = domain.built_with if domain.built_with is not None else model_cfg
    desc: dict[str, Any] = {"model": None if cfg is None else cfg.model_dump(mode="json"),
                            "n_users": int(domain.n_users), "n_items": int(domain.n_items),
                            "conditions_on_history": domain.histories is not None, "weights": None}
    paths = {"domain_model": os.path.join(directory, DESCRIPTION_FILE)}
    if desc["conditions_on_history"]:
        weights = os.path.join(directory, WEIGHTS_FILE)
        torch.save({k: v.detach().cpu().clone() for k, v in domain.state_dict().items()}, weights)
        desc["weights"] = WEIGHTS_FILE
        _write(paths["domain_model"], desc)
        reason = None if cfg is not None else "no model config (built without build_model and no cfg given)"
        if reason is None:
            reason = _mismatch(directory, user_vectors, histories)
        if reason is None:
            paths["domain_model_weights"] = weights
        else:
            from bridgerec.console import LOGGER

            os.remove(weights)
            desc.update(weights=None, reason=reason)
            LOGGER.warning("%s: weights not exported (%s); serving embeds history-only users as the mean of "
                           "their items' embeddings", type(domain).__name__, reason)
    _write(paths["domain_model"], desc)
    return paths


def _mismatch(directory: str, user_vectors: np.ndarray, histories: tuple[np.ndarray, np.ndarray]) -> Optional[str]:
    """None when the model rebuilt from ``directory`` gives ``user_vectors`` for a sample of users,
    else why not."""
    import torch

    indptr, items = histories
    users = np.unique(np.linspace(0, len(user_vectors) - 1, min(_CHECK_USERS, len(user_vectors))).astype(np.int64))
    try:
        rebuilt = load_domain_model(directory)
        with torch.inference_mode():
            got = rebuilt.embed_histories([items[indptr[u] : indptr[u + 1]] for u in users]).float().numpy()
    except Exception as e:  # noqa: BLE001 - any failure to rebuild means: no weights in the bundle
        return f"rebuilding it failed: {type(e).__name__}: {e}"
    want = np.asarray(user_vectors, dtype=np.float32)[users]
    if got.shape != want.shape:
        return f"the exported user vectors have shape {want.shape[1:]}, the domain model's {got.shape[1:]}"
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        return f"the exported user vectors are not the domain model's (max abs difference {np.abs(got - want).max():.3g})"
    return None


def _write(path: str, desc: dict) -> None:
    with open(path, "w") as fh:
        json.dump(desc, fh, indent=1)
