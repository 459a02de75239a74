"""EDM's four preconditionings (Karras et al. 2022, Table 1): D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)."""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import nn

from dmdlib.networks.dhariwal_unet import DhariwalUNet
from dmdlib.networks.song_unet import SongUNet

NETWORKS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


class Preconditioning(nn.Module, abc.ABC):
    """A UNet F behind one of EDM's preconditionings, called as EDM's networks are: D(x, sigma, class_labels).

    `use_fp16` is recorded for the published weights' sake; the network runs in its input's dtype (autocast, if any).
    `epsilon_weighting` says the network was trained with loss weight 1/sigma^2 (VP, VE, iDDPM) rather than EDM's.
    """

    epsilon_weighting = True
    out_channel_factor = 1

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ):
        super().__init__()
        if model_type not in NETWORKS:
            raise ValueError(f"model_type {model_type!r}: expected one of {sorted(NETWORKS)}")
        self.img_resolution, self.img_channels, self.label_dim, self.use_fp16 = (
            img_resolution,
            img_channels,
            label_dim,
            use_fp16,
        )
        self.model = NETWORKS[model_type](
            img_resolution=img_resolution,
            in_channels=img_channels,
            out_channels=img_channels * self.out_channel_factor,
            label_dim=label_dim,
            **model_kwargs,
        )

    @abc.abstractmethod
    def coefficients(self, sigma: torch.Tensor) -> tuple[Any, Any, Any, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) for sigma of shape [batch, 1, 1, 1] (c_noise [batch])."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.float()
        sigma = sigma.float().reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        output = self.model(c_in * x, c_noise.flatten(), label_batch(class_labels, self.label_dim, x))
        return c_skip * x + c_out * output[:, : self.img_channels].float()


class VPPrecond(Preconditioning):
    """Variance preserving (Song et al.): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), c_noise = (M - 1) t."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        M: int = 1000,
        epsilon_t: float = 1e-5,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = beta_d, beta_min, M, epsilon_t
        self.sigma_min, self.sigma_max = self.sigma(epsilon_t), self.sigma(1.0)

    def sigma(self, t: float) -> float:
        return math.sqrt(math.exp(0.5 * self.beta_d * t**2 + self.beta_min * t) - 1)

    def sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        return ((self.beta_min**2 + 2 * self.beta_d * (1 + sigma**2).log()).sqrt() - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        return 1, -sigma, (sigma**2 + 1).rsqrt(), (self.M - 1) * self.sigma_inv(sigma)


class VEPrecond(Preconditioning):
    """Variance exploding (Song et al.): c_out = sigma, c_noise = log(sigma / 2)."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        sigma_min: float = 0.02,
        sigma_max: float = 100,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def coefficients(self, sigma):
        return 1, sigma, 1, (0.5 * sigma).log()


class iDDPMPrecond(Preconditioning):  # noqa: N801 (EDM's class name, which snapshots record)
    """Improved DDPM (Nichol & Dhariwal): a cosine schedule's M discrete sigmas u_j; c_noise = M - 1 - j of the nearest.
    The network also predicts variances (twice the channels); D uses the mean half."""

    out_channel_factor = 2

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        C_1: float = 0.001,
        C_2: float = 0.008,
        M: int = 1000,
        model_type: str = "DhariwalUNet",
        **model_kwargs: Any,
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.C_1, self.C_2, self.M = C_1, C_2, M
        u = [0.0] * (M + 1)
        for j in range(M, 0, -1):  # EDM eq. 129: u_{j-1} from u_j
            u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(self.alpha_bar(j - 1) / self.alpha_bar(j), C_1) - 1)
        self.register_buffer("u", torch.tensor(u, dtype=torch.float32))
        self.sigma_min, self.sigma_max = u[M - 1], u[0]

    def alpha_bar(self, j: int) -> float:
        return math.sin(0.5 * math.pi * j / self.M / (self.C_2 + 1)) ** 2

    def coefficients(self, sigma):
        index = (sigma.reshape(-1, 1) - self.u.reshape(1, -1)).abs().argmin(dim=1)
        return 1, -sigma, (sigma**2 + 1).rsqrt(), self.M - 1 - index.float()


class EDMPrecond(Preconditioning):
    """EDM's own: c_skip = s_d^2 / (sigma^2 + s_d^2), c_out = sigma s_d / sqrt(...), c_in = 1 / sqrt(...), c_noise =
    ln(sigma) / 4."""

    epsilon_weighting = False

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        sigma_min: float = 0.0,
        sigma_max: float = float("inf"),
        sigma_data: float = 0.5,
        model_type: str = "DhariwalUNet",
        **model_kwargs: Any,
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)

    def coefficients(self, sigma):
        return edm_coefficients(sigma, self.sigma_data)


def label_batch(class_labels: torch.Tensor | None, label_dim: int, x: torch.Tensor) -> torch.Tensor | None:
    """One-hot class vectors [batch, label_dim] as float (zeros when None: no class), or None for unconditional nets."""
    if not label_dim:
        return None
    labels = torch.zeros([1, label_dim], device=x.device) if class_labels is None else class_labels.float()
    return labels.reshape(-1, label_dim).expand(x.shape[0], -1)


def edm_coefficients(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM Table 1's c_skip, c_out, c_in, c_noise (shared by EDM2's Precond)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data * total.rsqrt(), total.rsqrt(), sigma.log() / 4


PRECONDITIONINGS = {cls.__name__: cls for cls in (VPPrecond, VEPrecond, iDDPMPrecond, EDMPrecond)}
