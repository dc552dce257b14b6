"""Domain models behind the :class:`DomainModel` contract, and their registry."""

from bridgerec.models.base import DomainModel
from bridgerec.models.lightgcn import LightGCN
from bridgerec.models.mf import MF
from bridgerec.models.popularity import Popularity
from bridgerec.models.registry import (
    SERVING_HISTORY,
    TEST_HISTORY,
    build_model,
    build_model_for_dataset,
    conditioned_on,
    dataset_inputs,
    histories_for,
    model_class,
    model_names,
    register_model,
)
from bridgerec.models.sasrec import SASRec

register_model("mf")(MF)
register_model("lightgcn")(LightGCN)
register_model("sasrec")(SASRec)
register_model("popularity")(Popularity)

__all__ = [
    "DomainModel",
    "LightGCN",
    "MF",
    "Popularity",
    "SASRec",
    "SERVING_HISTORY",
    "TEST_HISTORY",
    "build_model",
    "build_model_for_dataset",
    "conditioned_on",
    "dataset_inputs",
    "histories_for",
    "model_class",
    "model_names",
    "register_model",
]
