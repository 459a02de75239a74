"""Exponential moving average of a network's weights (the EMA teacher and generator of EDM and DMD2)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(network: nn.Module, average: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * network for every parameter; buffers are copied as they are."""
    for (name, param), (avg_name, avg_param) in zip(network.named_parameters(), average.named_parameters()):
        if name != avg_name:
            raise ValueError(f"EMA of another network: parameter {avg_name!r} where {name!r} was expected")
        avg_param.lerp_(param, 1 - decay)
    for buffer, avg_buffer in zip(network.buffers(), average.buffers()):
        avg_buffer.copy_(buffer)
