"""bridgerec: LLM + domain-model recommenders on Ray, from raw interactions to an HTTP recommender."""

__version__ = "0.1.0"
__all__ = ["__version__"]
