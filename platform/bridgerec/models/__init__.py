"""Domain models behind the :class:`DomainModel` contract, and their registry."""

from bridgerec.models.base import DomainModel
from bridgerec.models.mf import MF
from bridgerec.models.popularity import Popularity
from bridgerec.models.registry import build_model, model_names, register_model

register_model("mf")(MF)
register_model("popularity")(Popularity)

__all__ = ["DomainModel", "MF", "Popularity", "build_model", "model_names", "register_model"]
