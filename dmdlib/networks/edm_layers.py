"""Layers of EDM's networks (Karras et al. 2022, appendix F), written from the paper and the published layer
names and shapes so that NVlabs' checkpoints load with strict=True."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _random(shape: list[int], fan_in: int) -> torch.Tensor:
    """He-style initial weights; only random-weight models (tests, benchmarks) keep them."""
    return torch.randn(shape) / math.sqrt(max(fan_in, 1))


class Linear(nn.Module):
    """A fully connected layer with EDM's parameter names (weight [out, in], bias [out])."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(_random([out_features, in_features], in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def _filter_2d(taps: list[int]) -> torch.Tensor:
    """The separable FIR resampling filter: outer product of the taps, normalised to sum 1, shape [1, 1, k, k]."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    return (torch.outer(f, f) / f.sum() ** 2)[None, None]


class Conv2d(nn.Module):
    """A k x k convolution (kernel 0: none) with optional 2x FIR up- or downsampling before it.

    `fused_resample` downsamples after the convolution with padding on the convolution instead
    (NCSN++'s residual input branch), as the published weights were trained.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: list[int] = (1, 1),
        fused_resample: bool = False,
    ):
        super().__init__()
        if up and down:
            raise ValueError("a Conv2d resamples up or down, not both")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fan_in = in_channels * kernel * kernel
        self.weight = nn.Parameter(_random([out_channels, in_channels, kernel, kernel], fan_in)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        self.register_buffer("resample_filter", _filter_2d(list(resample_filter)) if up or down else None)

    def _resample(self, x: torch.Tensor, channels: int, padding: int) -> torch.Tensor:
        f = self.resample_filter.to(x.dtype)
        if self.up:
            return F.conv_transpose2d(x, (4 * f).tile(channels, 1, 1, 1), groups=channels, stride=2, padding=padding)
        return F.conv2d(x, f.tile(channels, 1, 1, 1), groups=channels, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if self.resample_filter is None else (self.resample_filter.shape[-1] - 1) // 2
        resampling = self.up or self.down
        if resampling and self.fused_resample and w is not None and self.down:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = self._resample(x, self.out_channels, 0)
        elif resampling and self.fused_resample and w is not None:
            x = self._resample(x, self.in_channels, max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        else:
            if resampling:
                x = self._resample(x, self.in_channels, f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation with min(32, channels / 4) groups."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q^T k / sqrt(c)) applied to v, for [n, c, positions] tensors; the softmax in float32."""
    logits = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(k.shape[1]))
    return torch.einsum("nqk,nck->ncq", logits.softmax(dim=2).to(v.dtype), v)


class UNetBlock(nn.Module):
    """The residual block of DDPM++, NCSN++ and ADM: norm, SiLU, conv, the embedding as a bias (or scale and
    shift: `adaptive_scale`), dropout, conv, skip connection; then optional self-attention."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int | None = None,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: list[int] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        # As the published networks: heads from channels_per_head when not given, so a narrow level may get none.
        self.num_heads = (
            0 if not attention else num_heads if num_heads is not None else out_channels // channels_per_head
        )
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        resample = dict(up=up, down=down, resample_filter=resample_filter)
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, **resample)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, **resample)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1)
            self.proj = Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        residual = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(residual.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            residual = F.silu(shift + self.norm1(residual) * (scale + 1))
        else:
            residual = F.silu(self.norm1(residual + params))
        residual = self.conv1(F.dropout(residual, p=self.dropout, training=self.training))
        x = (residual + (x if self.skip is None else self.skip(x))) * self.skip_scale
        if self.num_heads:
            n, c, h, w = x.shape
            # qkv's output channels interleave (channel, q/k/v) per head, as the published weights were trained
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, h * w).unbind(2)
            x = (self.proj(attention(q, k, v).reshape(n, c, h, w)) + x) * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    """Transformer sinusoidal embedding of the noise label: [cos, sin] of x * max_positions^-(i / (n/2 [- 1]))."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        exponents = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        angles = torch.outer(x, ((1 / self.max_positions) ** exponents).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise label (NCSN++): [cos, sin] of 2 pi f x, f ~ N(0, scale^2) fixed."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.num_channels = num_channels
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def drop_labels(labels: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each sample's class vector with probability p while training (label dropout for guidance)."""
    if not training or not p:
        return labels
    return labels * (torch.rand([labels.shape[0], 1], device=labels.device) >= p).to(labels.dtype)


class CheckpointedBlocks:
    """Mixin: each block through activation checkpointing (recomputed in backward) when `gradient_checkpointing` is
    on."""

    gradient_checkpointing: bool = False

    def run_block(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)
