"""ADM (Dhariwal & Nichol 2021) as EDM configures it (EDM appendix F.3), with EDM's state-dict names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.networks.edm_layers import (
    CheckpointedBlocks,
    Conv2d,
    GroupNorm,
    Linear,
    PositionalEmbedding,
    UNetBlock,
    drop_labels,
)


class DhariwalUNet(CheckpointedBlocks, nn.Module):
    """F(x, c_noise, class_labels): ADM's UNet (scale-shift embedding, 64 channels per attention head);
    defaults are EDM's constructor defaults (ImageNet-64)."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: list[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: list[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
    ):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout)

        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)
        self.map_label = Linear(label_dim, emb_channels, bias=False) if label_dim else None

        self.enc = nn.ModuleDict()
        channels = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(channels, model_channels * mult, 3)
                channels = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(channels, channels, down=True, **block)
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                    channels, model_channels * mult, attention=res in attn_resolutions, **block
                )
                channels = model_channels * mult
        skips = [module.out_channels for module in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block)
            for idx in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                    channels + skips.pop(), model_channels * mult, attention=res in attn_resolutions, **block
                )
                channels = model_channels * mult
        self.out_norm = GroupNorm(channels)
        self.out_conv = Conv2d(channels, out_channels, 3)

    def embedding(
        self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None, augment_labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The block embedding: sinusoidal noise features, augment map, two layers, plus the class map, SiLU."""
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            labels = drop_labels(class_labels, self.label_dropout, self.training)
            emb = emb + self.map_label(labels)
        return F.silu(emb)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.embedding(noise_labels, class_labels, augment_labels)
        skips = []
        for module in self.enc.values():
            x = self.run_block(module, x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = self.run_block(module, x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
