"""k-diffusion's `image_v1` U-Net (the default teacher's network), built without the k-diffusion package.

Architecture and state-dict names follow k-diffusion 0.1.1's `models/image_v1.py`, so its checkpoints load here and
the default teacher's load in k-diffusion. Modules are built in k-diffusion's order, so one seed gives the same initial
weights (tests/test_karras_unet.py checks both against reference outputs of k-diffusion itself). Text cross-attention
image_v1 models are refused by `build_image_v1`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

AUGMENT_DIMS = 9  # k-diffusion's augmentation-conditioning vector, fed through mapping_cond when augment_wrapper is on
LINEAR_KERNEL = (1 / 8, 3 / 8, 3 / 8, 1 / 8)  # the 'linear' resampling kernel of image_v1's Downsample2d / Upsample2d

# k-diffusion's defaults for an image_v1 config (its config.load_config), for the keys this network reads.
IMAGE_V1_DEFAULTS = {
    "patch_size": 1,
    "augment_wrapper": True,
    "mapping_cond_dim": 0,
    "unet_cond_dim": 0,
    "cross_cond_dim": 0,
    "skip_stages": 0,
    "has_variance": False,
    "dropout_rate": 0.0,
}


def _orthogonal(module: nn.Module) -> nn.Module:
    nn.init.orthogonal_(module.weight)
    return module


def _zeroed(module: nn.Module) -> nn.Module:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class Conditioned(nn.Module):
    """A module that takes the mapping network's output `cond` beside its input."""


class ConditionedSequential(nn.Sequential, Conditioned):
    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for module in self:
            x = module(x, cond) if isinstance(module, Conditioned) else module(x)
        return x


class FourierFeatures(nn.Module):
    """cos and sin of random frequencies (a fixed buffer, drawn at construction) of the noise level."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("weight", torch.randn([out_features // 2, in_features]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * x @ self.weight.T
        return torch.cat([phase.cos(), phase.sin()], dim=-1)


class AdaGN(Conditioned):
    """Group norm whose per-channel scale (1 + w) and shift b come from `cond` through a zero-initialised linear map."""

    def __init__(self, feats_in: int, channels: int, groups: int):
        super().__init__()
        self.groups = groups
        self.mapper = _zeroed(nn.Linear(feats_in, channels * 2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = (v[..., None, None] for v in self.mapper(cond).chunk(2, dim=-1))
        return torch.addcmul(shift, F.group_norm(x, self.groups, eps=1e-5), scale + 1)


class ResConvBlock(Conditioned):
    """Two AdaGN-GELU-conv layers plus a (1x1 orthogonal, where the width changes) skip; the last conv starts at 0."""

    def __init__(self, feats_in: int, c_in: int, c_mid: int, c_out: int, dropout_rate: float, group_size: int = 32):
        super().__init__()
        skip = _orthogonal(nn.Conv2d(c_in, c_out, 1, bias=False)) if c_in != c_out else nn.Identity()  # drawn first
        self.main = ConditionedSequential(
            AdaGN(feats_in, c_in, max(1, c_in // group_size)),
            nn.GELU(),
            nn.Conv2d(c_in, c_mid, 3, padding=1),
            nn.Dropout2d(dropout_rate, inplace=True),
            AdaGN(feats_in, c_mid, max(1, c_mid // group_size)),
            nn.GELU(),
            _zeroed(nn.Conv2d(c_mid, c_out, 3, padding=1)),
            nn.Dropout2d(dropout_rate, inplace=True),
        )
        self.skip = skip

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.main(x, cond) + self.skip(x)


class SelfAttention2d(Conditioned):
    """Multi-head self-attention over pixels, after an AdaGN; the output projection starts at 0."""

    def __init__(self, feats_in: int, channels: int, heads: int, groups: int, dropout_rate: float):
        super().__init__()
        self.norm_in = AdaGN(feats_in, channels, groups)
        self.heads = heads
        self.qkv_proj = nn.Conv2d(channels, channels * 3, 1)
        self.out_proj = _zeroed(nn.Conv2d(channels, channels, 1))
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv_proj(self.norm_in(x, cond)).view([n, self.heads * 3, c // self.heads, h * w]).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout.p if self.training else 0.0)
        return x + self.out_proj(y.transpose(2, 3).contiguous().view([n, c, h, w]))


class Resample2d(nn.Module):
    """Halve (down) or double (up) the resolution with the separable 'linear' kernel and reflect padding."""

    def __init__(self, up: bool):
        super().__init__()
        self.up = up
        kernel_1d = torch.tensor([LINEAR_KERNEL]) * (2 if up else 1)
        self.pad = kernel_1d.shape[1] // 2 - 1
        self.register_buffer("kernel", kernel_1d.T @ kernel_1d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, ((self.pad + 1) // 2 if self.up else self.pad,) * 4, "reflect")
        weight = x.new_zeros([x.shape[1], x.shape[1], *self.kernel.shape])
        channels = torch.arange(x.shape[1], device=x.device)
        weight[channels, channels] = self.kernel.to(weight)  # each channel filtered on its own
        if self.up:
            return F.conv_transpose2d(x, weight, stride=2, padding=self.pad * 2 + 1)
        return F.conv2d(x, weight, stride=2)


def _stage_layers(
    depth: int, feats_in: int, c_in: int, c_mid: int, c_out: int, self_attn: bool, dropout_rate: float
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(depth):
        layer_out = c_mid if i < depth - 1 else c_out
        layers.append(ResConvBlock(feats_in, c_in if i == 0 else c_mid, c_mid, layer_out, dropout_rate))
        if self_attn:
            groups = max(1, layer_out // 32)
            layers.append(SelfAttention2d(feats_in, layer_out, max(1, layer_out // 64), groups, dropout_rate))
    return layers


class DownStage(ConditionedSequential):
    """(Downsample,) then ResConvBlocks (and self-attention) of one resolution of the U-Net's encoder."""

    def __init__(self, depth, feats_in, c_in, c_mid, c_out, downsample, self_attn, dropout_rate):
        layers = _stage_layers(depth, feats_in, c_in, c_mid, c_out, self_attn, dropout_rate)
        super().__init__(Resample2d(up=False) if downsample else nn.Identity(), *layers)


class UpStage(ConditionedSequential):
    """ResConvBlocks (and self-attention) of one resolution of the decoder over [input, skip], then (upsample)."""

    def __init__(self, depth, feats_in, c_in, c_mid, c_out, upsample, self_attn, dropout_rate):
        layers = _stage_layers(depth, feats_in, c_in, c_mid, c_out, self_attn, dropout_rate)
        super().__init__(*layers, Resample2d(up=True) if upsample else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if skip is None else torch.cat([x, skip], dim=1), cond)


class UNet(Conditioned):
    def __init__(self, d_blocks: list[nn.Module], u_blocks: list[nn.Module], skip_stages: int):
        super().__init__()
        self.d_blocks = nn.ModuleList(d_blocks)
        self.u_blocks = nn.ModuleList(u_blocks)
        self.skip_stages = skip_stages

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.d_blocks[self.skip_stages :]:
            x = block(x, cond)
            skips.append(x)
        for i, (block, skip) in enumerate(zip(self.u_blocks, reversed(skips))):
            x = block(x, cond, skip if i > 0 else None)
        return x


class ImageV1(nn.Module):
    """F(c_in x, sigma) of k-diffusion's image_v1: Fourier noise features and a class/augment vector through a mapping
    MLP condition every block's AdaGN; the noise level enters as log(sigma) / 4."""

    def __init__(
        self,
        c_in: int,
        feats_in: int,
        depths: list[int],
        channels: list[int],
        self_attn_depths: list[bool],
        mapping_cond_dim: int = 0,
        unet_cond_dim: int = 0,
        dropout_rate: float = 0.0,
        patch_size: int = 1,
        skip_stages: int = 0,
        has_variance: bool = False,
    ):
        super().__init__()
        self.patch_size, self.has_variance = patch_size, has_variance
        self.timestep_embed = FourierFeatures(1, feats_in)
        if mapping_cond_dim > 0:
            self.mapping_cond = nn.Linear(mapping_cond_dim, feats_in, bias=False)
        self.mapping = nn.Sequential(
            _orthogonal(nn.Linear(feats_in, feats_in)), nn.GELU(), _orthogonal(nn.Linear(feats_in, feats_in)), nn.GELU()
        )
        outer = channels[max(0, skip_stages - 1)]
        self.proj_in = nn.Conv2d((c_in + unet_cond_dim) * patch_size**2, outer, 1)
        self.proj_out = _zeroed(nn.Conv2d(outer, c_in * patch_size**2 + int(has_variance), 1))
        d_blocks = [
            DownStage(
                depth,
                feats_in,
                channels[max(0, i - 1)],
                channels[i],
                channels[i],
                i > skip_stages,
                self_attn_depths[i],
                dropout_rate,
            )  # fmt: skip
            for i, depth in enumerate(depths)
        ]
        u_blocks = [
            UpStage(
                depth,
                feats_in,
                channels[i] * 2 if i < len(depths) - 1 else channels[i],
                channels[i],
                channels[max(0, i - 1)],
                i > skip_stages,
                self_attn_depths[i],
                dropout_rate,
            )  # fmt: skip
            for i, depth in enumerate(depths)
        ]
        self.u_net = UNet(d_blocks, u_blocks[::-1], skip_stages)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        mapping_cond: torch.Tensor | None = None,
        unet_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        timestep_embed = self.timestep_embed((sigma.log() / 4)[:, None])
        cond_embed = torch.zeros_like(timestep_embed) if mapping_cond is None else self.mapping_cond(mapping_cond)
        cond = self.mapping(timestep_embed + cond_embed)
        if unet_cond is not None:
            x = torch.cat([x, unet_cond], dim=1)
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)
        x = self.proj_out(self.u_net(self.proj_in(x), cond))
        if self.has_variance:
            x = x[:, :-1]  # the log-variance channel of a variance-trained model is not part of D
        return F.pixel_shuffle(x, self.patch_size) if self.patch_size > 1 else x


class AugmentConditioned(nn.Module):
    """k-diffusion's `augment_wrapper`: the model was trained with a 9-d augmentation vector before its mapping_cond;
    sampling feeds zeros there (no augmentation)."""

    def __init__(self, inner_model: ImageV1):
        super().__init__()
        self.inner_model = inner_model

    def forward(self, x, sigma, mapping_cond=None, **kwargs):
        no_augment = x.new_zeros([x.shape[0], AUGMENT_DIMS])
        mapping_cond = no_augment if mapping_cond is None else torch.cat([no_augment, mapping_cond], dim=1)
        return self.inner_model(x, sigma, mapping_cond=mapping_cond, **kwargs)


def build_image_v1(model_config: dict[str, Any]) -> nn.Module:
    """The network an image_v1 `model` config section describes, k-diffusion's defaults filling what it leaves out."""
    config = {**IMAGE_V1_DEFAULTS, **model_config}
    if config["cross_cond_dim"]:
        raise ValueError("cross_cond_dim: text cross-attention image_v1 models are not supported")
    augment = bool(config["augment_wrapper"])
    network = ImageV1(
        config["input_channels"],
        config["mapping_out"],
        config["depths"],
        config["channels"],
        config["self_attn_depths"],
        mapping_cond_dim=config["mapping_cond_dim"] + (AUGMENT_DIMS if augment else 0),
        unet_cond_dim=config["unet_cond_dim"],
        dropout_rate=config["dropout_rate"],
        patch_size=config["patch_size"],
        skip_stages=config["skip_stages"],
        has_variance=config["has_variance"],
    )
    return AugmentConditioned(network) if augment else network
