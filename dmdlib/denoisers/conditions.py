"""What `cond` a teacher takes: class labels, or the embeddings of training prompts looked up by id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dmdlib.denoisers.base import Denoiser


@dataclass
class Conditions:
    """`count` conditions (classes, or training prompts); `lookup` turns ids into `cond`."""

    count: int
    lookup: Callable[[torch.Tensor], torch.Tensor] = lambda ids: ids  # class labels are their own cond

    @classmethod
    def of(cls, denoiser: Denoiser) -> "Conditions | None":
        """The class labels of a class-conditional teacher, else None (unconditional)."""
        return cls(denoiser.num_classes) if denoiser.num_classes else None
