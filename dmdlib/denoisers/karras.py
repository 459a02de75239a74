"""EDM / k-diffusion models with Karras et al. preconditioning."""

from __future__ import annotations

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, checkpoint_forward, expand
from dmdlib.errors import TeacherError
from dmdlib.networks.karras_unet import ResConvBlock


class KarrasPreconditioner(nn.Module):
    """D = c_skip x + c_out F(c_in x, sigma) with EDM's c_skip, c_out, c_in (Table 1); F sees sigma itself.

    The wrapped network sits at `inner_model`, the state-dict layout of k-diffusion's `layers.Denoiser`."""

    def __init__(self, inner_model: nn.Module, sigma_data: float):
        super().__init__()
        self.inner_model = inner_model
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        s = expand(sigma, x)
        c_skip = self.sigma_data**2 / (s**2 + self.sigma_data**2)
        c_out = s * self.sigma_data / (s**2 + self.sigma_data**2) ** 0.5
        c_in = 1 / (s**2 + self.sigma_data**2) ** 0.5
        return self.inner_model(x * c_in, sigma, **kwargs) * c_out + x * c_skip


class KarrasDenoiser(Denoiser):
    """D = c_skip x + c_out F(c_in x, sigma) (EDM Table 1) around a k-diffusion-layout network.

    `cond_key` names the keyword the inner model takes conditioning by (e.g. 'class_cond'),
    or None for an unconditional model.
    """

    def __init__(
        self,
        inner_model: nn.Module,
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        cond_key: str | None = None,
    ):
        super().__init__()
        self.model = KarrasPreconditioner(inner_model, sigma_data=sigma_data)
        self.sigma_data, self.sigma_min, self.sigma_max = sigma_data, sigma_min, sigma_max
        self.cond_key = cond_key

    @property
    def inner_model(self) -> nn.Module:
        return self.model.inner_model

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        kwargs = {} if cond is None or self.cond_key is None else {self.cond_key: cond}
        return self.model(x, sigma, **kwargs)

    def _image_v1(self) -> nn.Module:
        model = getattr(self.inner_model, "inner_model", self.inner_model)  # under OneHotClasses, if any
        if not hasattr(model, "u_net") or not hasattr(model, "timestep_embed"):
            raise TeacherError(
                f"{type(model).__name__}: bottleneck and noise embedding are known for k-diffusion image_v1 models only"
            )
        return model

    def bottleneck(self) -> nn.Module:
        return self._image_v1().u_net.d_blocks[-1]

    def time_embedding(self) -> tuple[nn.Module, int]:
        fourier = self._image_v1().timestep_embed
        return fourier, 2 * fourier.weight.shape[0]  # cos and sin of each frequency

    def enable_gradient_checkpointing(self) -> None:
        for block in self._image_v1().modules():
            if isinstance(block, ResConvBlock):
                checkpoint_forward(block)
