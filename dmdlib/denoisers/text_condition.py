"""One tensor for every text-to-image teacher's condition: the token embeddings, then rows holding the pooled vector.

SD v1.5 needs only token embeddings [batch, tokens, dim]; SDXL adds a pooled embedding and its size/crop ids, SD3 and
FLUX a pooled embedding. Packing those extras as ceil(width / dim) zero-padded rows after the tokens keeps `cond` a
single [batch, rows, dim] tensor, so guidance (concatenating cond and uncond), the prompt cache and batching treat
every family alike; each denoiser unpacks it with the extras' width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def extra_rows(width: int, dim: int) -> int:
    return math.ceil(width / dim) if width else 0


def pack(tokens: torch.Tensor, extras: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, tokens, dim] and [batch, width] -> [batch, tokens + ceil(width / dim), dim]."""
    if extras is None or extras.shape[-1] == 0:
        return tokens
    batch, dim = tokens.shape[0], tokens.shape[-1]
    rows = extra_rows(extras.shape[-1], dim)
    padded = F.pad(extras.to(tokens.dtype), (0, rows * dim - extras.shape[-1]))
    return torch.cat([tokens, padded.reshape(batch, rows, dim)], dim=1)


def unpack(cond: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pack` for extras of `width` values: (tokens, extras)."""
    rows = extra_rows(width, cond.shape[-1])
    if rows == 0:
        return cond, cond.new_zeros(cond.shape[0], 0)
    return cond[:, :-rows], cond[:, -rows:].reshape(cond.shape[0], -1)[:, :width]
