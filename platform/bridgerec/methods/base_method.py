"""``base``: the domain model alone with its own loss (BPR / CE)."""

from __future__ import annotations

import torch

from bridgerec.methods.base import Method
from bridgerec.models.base import Batch

__all__ = ["BaseMethod"]


class BaseMethod(Method):
    name = "base"

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"rec": self.domain(batch)}

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        return self.domain.full_scores(uids)
