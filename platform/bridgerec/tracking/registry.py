"""Guarded promotion in the MLflow model registry: only `bridgerec promote` moves ``champion``.

A version is promoted when its run beats the current champion's run on a validation metric on
the same dataset (the runs' ``dataset.content_hash`` tags agree), or with ``force``. Either way
the comparison is recorded in the version's ``promote.*`` tags; a refusal is one line saying why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from bridgerec.tracking.runs import valid_metric

__all__ = ["Promotion", "promote"]


@dataclass
class Promotion:
    accepted: bool
    reason: str
    name: str
    version: str
    alias: str
    metric: str
    value: Optional[float]
    champion_version: Optional[str] = None
    champion_value: Optional[float] = None

    def line(self) -> str:
        verb = "promoted" if self.accepted else "refused"
        return f"{verb}: models:/{self.name}/{self.version} -> @{self.alias}: {self.reason}"


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _current(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no such alias yet
        return None


def _decide(p: Promotion, new_hash: str | None, old_hash: str | None, force: bool) -> Promotion:
    if p.champion_version is None:
        p.accepted, p.reason = True, f"no @{p.alias} yet; {p.metric} {_fmt(p.value)}"
    elif p.champion_version == p.version:
        p.accepted, p.reason = False, f"version {p.version} already is @{p.alias}"
    elif new_hash != old_hash and not force:
        p.accepted, p.reason = False, (f"trained on dataset {str(new_hash)[:12]}, @{p.alias} (version {p.champion_version}) "
                                       f"on {str(old_hash)[:12]}: not comparable (--force to promote anyway)")
    elif p.value is None:
        p.accepted, p.reason = force, f"its run has no {p.metric}" + (" (forced)" if force else "")
    elif p.champion_value is not None and p.value <= p.champion_value and not force:
        p.accepted, p.reason = False, (f"{p.metric} {_fmt(p.value)} does not beat @{p.alias} (version "
                                       f"{p.champion_version}) {_fmt(p.champion_value)} (--force to promote anyway)")
    else:
        p.accepted = True
        p.reason = (f"{p.metric} {_fmt(p.value)} vs {_fmt(p.champion_value)} of version {p.champion_version}"
                    + (" (forced)" if force else ""))
    return p


def promote(client, name: str, version: str | int, metric_key: str = "valid_recall_at_20", alias: str = "champion",
            force: bool = False) -> Promotion:
    """Point ``models:/<name>@<alias>`` at ``version`` if its run's best validation ``metric_key``
    beats the current alias holder's on the same dataset hash (or ``force``)."""
    version = str(version)
    mv = client.get_model_version(name, version)  # MlflowException names an unknown model or version
    run = client.get_run(mv.run_id)
    p = Promotion(False, "", name, version, alias, metric_key, valid_metric(client, run, metric_key))
    old = _current(client, name, alias)
    old_hash = None
    if old is not None:
        old_run = client.get_run(old.run_id)
        p.champion_version, p.champion_value = str(old.version), valid_metric(client, old_run, metric_key)
        old_hash = old_run.data.tags.get("dataset.content_hash")
    _decide(p, run.data.tags.get("dataset.content_hash"), old_hash, force)
    tags = {
        "promote.metric": metric_key, "promote.value": _fmt(p.value),
        "promote.champion_version": p.champion_version or "none", "promote.champion_value": _fmt(p.champion_value),
        "promote.decision": ("forced" if force and p.accepted else "accepted" if p.accepted else "refused"),
        "promote.reason": p.reason, "promote.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    if p.accepted:
        client.set_registered_model_alias(name, alias, version)
    return p
