"""Config section of evaluation (``cfg.eval``; wired into the root Config). Light on purpose."""

from __future__ import annotations

from bridgerec._config_base import Section

__all__ = ["EvalConfig"]


class EvalConfig(Section):
    ks: list[int] = [10, 20]
    """Cut-offs K for Recall/NDCG/HR/MRR/Precision@K."""
    user_batch_size: int = 1024
    """Users scored at once in full-ranking evaluation (bounds memory)."""
    sampled_negatives: int = 99
    """Negatives per positive in the sampled mode (for LLM rankers)."""
    long_tail_user_quantile: float = 0.2
    """Users whose training count is in the lowest quantile form the long-tail slice."""
    head_item_fraction: float = 0.2
    """The most popular fraction of items forms the head-item slice; the rest is the tail."""
    cold_item_max_train: int = 5
    """Test items with at most this many training interactions count as cold."""
