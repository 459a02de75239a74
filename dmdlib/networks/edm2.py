"""EDM2's magnitude-preserving UNet and its preconditioning (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", figure 21 and appendix B), with EDM2's state-dict names."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.networks.edm_layers import CheckpointedBlocks
from dmdlib.networks.edm_precond import edm_coefficients, label_batch


def normalize(x: torch.Tensor, dim: list[int] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """x scaled to unit RMS magnitude over `dim` (default: all but the first), eps added to the rescaled norm."""
    dim = list(range(1, x.ndim)) if dim is None else dim
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = eps + norm * math.sqrt(norm.numel() / x.numel())
    return x / norm.to(x.dtype)


def resample(x: torch.Tensor, mode: str, taps: list[int] = (1, 1)) -> torch.Tensor:
    """2x FIR up- or downsampling of every channel ('keep': none)."""
    if mode == "keep":
        return x
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = (torch.outer(f, f) / f.sum() ** 2)[None, None].to(x.dtype).to(x.device)
    channels, pad = x.shape[1], (len(taps) - 1) // 2
    if mode == "down":
        return F.conv2d(x, f.tile(channels, 1, 1, 1), groups=channels, stride=2, padding=pad)
    return F.conv_transpose2d(x, (4 * f).tile(channels, 1, 1, 1), groups=channels, stride=2, padding=pad)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU rescaled to unit magnitude for unit-variance input (EDM2 eq. 81)."""
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving interpolation of two branches (EDM2 eq. 88)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving channel concatenation with balance t (EDM2 eq. 103)."""
    na, nb = a.shape[1], b.shape[1]
    scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    return torch.cat([a * (scale / math.sqrt(na) * (1 - t)), b * (scale / math.sqrt(nb) * t)], dim=1)


class MPFourier(nn.Module):
    """Fixed random Fourier features sqrt(2) cos(2 pi (f x + phase)) (EDM2 eq. 75), computed in float32."""

    def __init__(self, num_channels: int, bandwidth: float = 1):
        super().__init__()
        self.num_channels = num_channels
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.outer(x.float(), self.freqs.float()) + self.phases.float()
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Convolution or linear layer (kernel []) on unit-normalised weights times gain / sqrt(fan-in) (EDM2 eq. 47);
    while training it also projects the stored weights back to unit norm (forced weight normalisation, eq. 66)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: list[int]):
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1) -> torch.Tensor:
        w = self.weight.float()
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = (normalize(w) * (gain / math.sqrt(w[0].numel()))).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


class Block(nn.Module):
    """EDM2's encoder ('enc') or decoder ('dec') block: resample, (skip conv, pixel norm), residual branch scaled by
    the embedding, magnitude-preserving sums, optional cosine attention, activations clipped."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        flavor: str = "enc",
        resample_mode: str = "keep",
        resample_filter: list[int] = (1, 1),
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float | None = 256,
    ):
        super().__init__()
        self.out_channels, self.flavor = out_channels, flavor
        self.resample_mode, self.resample_filter = resample_mode, list(resample_filter)
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, [3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, [])
        self.conv_res1 = MPConv(out_channels, out_channels, [3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, [1, 1]) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, [1, 1]) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, [1, 1]) if self.num_heads else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = resample(x, self.resample_mode, self.resample_filter)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=[1])  # pixel norm
        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale[:, :, None, None].to(y.dtype))
        y = self.conv_res1(F.dropout(y, p=self.dropout, training=self.training))
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, self.res_balance)
        if self.num_heads:
            n, c, h, w = x.shape
            # qkv's output channels interleave (channel, q/k/v) per head, as the published weights were trained
            q, k, v = normalize(self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, h * w), dim=[2]).unbind(3)
            weights = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(q.shape[2])).softmax(dim=3)
            y = self.attn_proj(torch.einsum("nhqk,nhck->nhcq", weights, v).reshape(n, c, h, w))
            x = mp_sum(x, y, self.attn_balance)
        return x if self.clip_act is None else x.clip(-self.clip_act, self.clip_act)


class UNet(CheckpointedBlocks, nn.Module):
    """EDM2's UNet F(x, c_noise, class_labels); defaults are EDM2's constructor defaults."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        model_channels: int = 192,
        channel_mult: list[int] = (1, 2, 3, 4),
        channel_mult_noise: int | None = None,
        channel_mult_emb: int | None = None,
        num_blocks: int = 3,
        attn_resolutions: list[int] = (16, 8),
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        **block_kwargs: Any,
    ):
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        noise_channels = model_channels * channel_mult_noise if channel_mult_noise is not None else widths[0]
        emb_channels = model_channels * channel_mult_emb if channel_mult_emb is not None else max(widths)
        self.label_balance, self.concat_balance = label_balance, concat_balance
        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(noise_channels)
        self.emb_noise = MPConv(noise_channels, emb_channels, [])
        self.emb_label = MPConv(label_dim, emb_channels, []) if label_dim else None

        self.enc = nn.ModuleDict()
        channels = img_channels + 1  # a constant-one channel gives the convolutions a notion of the border
        for level, width in enumerate(widths):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(channels, width, [3, 3])
                channels = width
            else:
                self.enc[f"{res}x{res}_down"] = Block(channels, channels, emb_channels, "enc", "down", **block_kwargs)
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = Block(
                    channels, width, emb_channels, "enc", attention=res in attn_resolutions, **block_kwargs
                )
                channels = width
        skips = [module.out_channels for module in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, width in reversed(list(enumerate(widths))):
            res = img_resolution >> level
            if level == len(widths) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(
                    channels, channels, emb_channels, "dec", attention=True, **block_kwargs
                )
                self.dec[f"{res}x{res}_in1"] = Block(channels, channels, emb_channels, "dec", **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = Block(channels, channels, emb_channels, "dec", "up", **block_kwargs)
            for idx in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = Block(
                    channels + skips.pop(),
                    width,
                    emb_channels,
                    "dec",
                    attention=res in attn_resolutions,
                    **block_kwargs,
                )
                channels = width
        self.out_conv = MPConv(channels, img_channels, [3, 3])

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            emb = mp_sum(emb, self.emb_label(class_labels * math.sqrt(class_labels.shape[1])), self.label_balance)
        emb = mp_silu(emb)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, module in self.enc.items():
            x = module(x) if "conv" in name else self.run_block(module, x, emb)
            skips.append(x)
        for name, module in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), self.concat_balance)
            x = self.run_block(module, x, emb)
        return self.out_conv(x, gain=self.out_gain)


class Precond(nn.Module):
    """EDM2's preconditioning: EDM's coefficients around the UNet, plus the learned uncertainty u(sigma) of its
    loss (eq. 21), which the denoiser itself does not use."""

    epsilon_weighting = False

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        use_fp16: bool = True,
        sigma_data: float = 0.5,
        logvar_channels: int = 128,
        **unet_kwargs: Any,
    ):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim, self.use_fp16 = (
            img_resolution,
            img_channels,
            label_dim,
            use_fp16,
        )
        self.sigma_data = float(sigma_data)
        self.sigma_min, self.sigma_max = 0.0, float("inf")
        self.unet = UNet(img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim, **unet_kwargs)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, [])

    @property
    def model(self) -> UNet:
        return self.unet

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.float()
        sigma = sigma.float().reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        labels = label_batch(class_labels, self.label_dim, x)
        return c_skip * x + c_out * self.unet(c_in * x, c_noise.flatten(), labels).float()
