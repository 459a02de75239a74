"""NVlabs EDM and EDM2 networks behind the denoiser interface: their preconditionings already are D(x, sigma)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.denoisers.base import Denoiser
from dmdlib.networks.edm2 import Block, Precond
from dmdlib.networks.edm_layers import UNetBlock
from dmdlib.networks.edm_precond import PRECONDITIONINGS

NETWORK_CLASSES: dict[str, type[nn.Module]] = {**PRECONDITIONINGS, "Precond": Precond}
# EDM's sampler defaults (EDM section 3): the Heun schedule runs from 80 to 0.002, clamped to the network's range
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0
UNCOND_CLASS = -1  # a zero one-hot vector: what label dropout trains for "no class"


def build_network(class_name: str, init_kwargs: dict[str, Any]) -> nn.Module:
    """The project's implementation of EDM's (or EDM2's) `class_name`, built from its recorded constructor kwargs."""
    if class_name not in NETWORK_CLASSES:
        raise ValueError(f"network class {class_name!r}: expected one of {sorted(NETWORK_CLASSES)}")
    return NETWORK_CLASSES[class_name](**init_kwargs)


class EDMDenoiser(Denoiser):
    """D(x, sigma, class) of an EDM/EDM2 preconditioned network; integer labels become one-hot vectors,
    UNCOND_CLASS a zero vector, augmentation labels stay zero (off)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        for module in network.modules():  # dropout off in the trainable copies: DMD's training settings
            if isinstance(module, (UNetBlock, Block)):
                module.dropout = 0.0
        self.sigma_min = max(EDM_SIGMA_MIN, network.sigma_min)
        self.sigma_max = min(EDM_SIGMA_MAX, network.sigma_max)
        self.sigma_data = getattr(network, "sigma_data", 0.5)
        self.num_classes = network.label_dim
        self.sample_shape = (network.img_channels, network.img_resolution, network.img_resolution)
        if self.num_classes and getattr(network.model, "label_dropout", 0) > 0:
            self.uncond = torch.tensor([UNCOND_CLASS])

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        labels = None
        if self.num_classes and cond is not None:
            known = cond.long() >= 0
            labels = F.one_hot(cond.long().clamp_min(0), self.num_classes) * known[:, None]
        return self.network(x, sigma, labels).to(x.dtype)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """1/sigma^2 for the VP, VE and iDDPM networks (EDM Table 1's lambda), EDM's weighting for EDM and EDM2."""
        return sigma**-2 if self.network.epsilon_weighting else super().loss_weight(sigma)

    def bottleneck(self) -> nn.Module:
        """The decoder's first block at the lowest resolution (after the middle attention block)."""
        decoder = self.network.model.dec
        return decoder[next(name for name in decoder if name.endswith("_in1"))]

    def time_embedding(self) -> tuple[nn.Module, int]:
        model = self.network.model
        embedding = model.emb_fourier if hasattr(model, "emb_fourier") else model.map_noise
        return embedding, embedding.num_channels

    def enable_gradient_checkpointing(self) -> None:
        self.network.model.gradient_checkpointing = True
