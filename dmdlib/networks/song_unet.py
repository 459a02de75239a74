"""DDPM++ and NCSN++ (Song et al. 2021) as EDM configures them (EDM appendix F.2), with EDM's state-dict names."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.networks.edm_layers import (
    CheckpointedBlocks,
    Conv2d,
    FourierEmbedding,
    GroupNorm,
    Linear,
    PositionalEmbedding,
    UNetBlock,
    drop_labels,
)


class SongUNet(CheckpointedBlocks, nn.Module):
    """F(x, c_noise, class_labels): the DDPM++ (positional embedding, standard encoder, [1,1] filter) or NCSN++
    (Fourier embedding, residual encoder, [1,3,3,1] filter) UNet; defaults are EDM's constructor defaults."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: list[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: list[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: list[int] = (1, 1),
    ):
        super().__init__()
        if (
            embedding_type not in ("positional", "fourier")
            or encoder_type not in ("standard", "skip", "residual")
            or decoder_type not in ("standard", "skip")
        ):
            raise ValueError(
                f"SongUNet: unknown embedding_type {embedding_type!r}, encoder_type {encoder_type!r} "
                f"or decoder_type {decoder_type!r}"
            )
        self.label_dropout = label_dropout
        emb_channels, noise_channels = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        block = dict(
            emb_channels=emb_channels,
            num_heads=1,
            dropout=dropout,
            skip_scale=math.sqrt(0.5),
            eps=1e-6,
            resample_filter=resample_filter,
            resample_proj=True,
            adaptive_scale=False,
        )

        self.map_noise = (
            PositionalEmbedding(noise_channels, endpoint=True)
            if embedding_type == "positional"
            else FourierEmbedding(noise_channels)
        )
        self.map_label = Linear(label_dim, noise_channels) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        self.enc = nn.ModuleDict()
        channels = aux_channels = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(channels, model_channels, 3)
                channels = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(channels, channels, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(
                        aux_channels, aux_channels, 0, down=True, resample_filter=resample_filter
                    )
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(aux_channels, channels, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        aux_channels, channels, 3, down=True, resample_filter=resample_filter, fused_resample=True
                    )
                    aux_channels = channels
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                    channels, model_channels * mult, attention=res in attn_resolutions, **block
                )
                channels = model_channels * mult
        skips = [module.out_channels for name, module in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block)
            for idx in range(num_blocks + 1):
                attend = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                    channels + skips.pop(), model_channels * mult, attention=attend, **block
                )
                channels = model_channels * mult
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=resample_filter
                    )
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(channels, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(channels, out_channels, 3)

    def embedding(
        self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None, augment_labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The block embedding: noise label features (as [sin, cos]) plus class and augment maps, two SiLU layers."""
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)
        if self.map_label is not None:
            labels = drop_labels(class_labels, self.label_dropout, self.training)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.embedding(noise_labels, class_labels, augment_labels)
        skips, aux = [], x
        for name, module in self.enc.items():
            if "aux_down" in name:
                aux = module(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + module(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)
            else:
                x = self.run_block(module, x, emb) if isinstance(module, UNetBlock) else module(x)
                skips.append(x)
        aux = normed = None
        for name, module in self.dec.items():
            if "aux_up" in name:
                aux = module(aux)
            elif "aux_norm" in name:
                normed = module(x)
            elif "aux_conv" in name:
                out = module(F.silu(normed))
                aux = out if aux is None else out + aux
            else:
                if x.shape[1] != module.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = self.run_block(module, x, emb)
        return aux
