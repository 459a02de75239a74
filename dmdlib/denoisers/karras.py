"""EDM / k-diffusion models with Karras et al. preconditioning."""

from __future__ import annotations

import torch
from k_diffusion.layers import Denoiser as KarrasPreconditioner
from k_diffusion.models.image_v1 import ResConvBlock
from torch import nn

from dmdlib.denoisers.base import Denoiser, checkpoint_forward
from dmdlib.errors import TeacherError


class KarrasDenoiser(Denoiser):
    """D = c_skip x + c_out F(c_in x, sigma) (EDM Table 1), through k-diffusion's `layers.Denoiser`.

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
