"""Discrete-time DDPM teachers (diffusers UNets), mapped to sigma space as k-diffusion does."""

from __future__ import annotations

import abc
from typing import Literal

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, expand
from dmdlib.denoisers.text_condition import unpack
from dmdlib.errors import TeacherError

PredictionType = Literal["epsilon", "v_prediction", "sample"]


class SigmaSchedule(nn.Module):
    """A discrete ascending list of sigmas, and the fractional timestep of any sigma between them: linear in log sigma
    between the two neighbouring grid points, clamped to the grid's ends (as k-diffusion's DiscreteSchedule)."""

    def __init__(self, sigmas: torch.Tensor):
        super().__init__()
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        above = log_sigma - self.log_sigmas[:, None] >= 0  # [grid, batch]: grid points at or below each sigma
        low = above.cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        w = ((self.log_sigmas[low] - log_sigma) / (self.log_sigmas[low] - self.log_sigmas[low + 1])).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of `sigma_to_t` inside the grid."""
        t = t.float()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[t.floor().long()] + w * self.log_sigmas[t.ceil().long()]).exp()


class DiscreteDenoiser(Denoiser):
    """A network trained on x_t = sqrt(a_t) x0 + sqrt(1 - a_t) n, t in 0..T-1, seen as D(x, sigma).

    sigma_t = sqrt((1 - a_t) / a_t); the network sees x / sqrt(sigma^2 + 1) and the fractional
    timestep interpolated in log sigma (`SigmaSchedule`). Subclasses implement
    `call_model`, the one place that knows the network's signature.
    """

    def __init__(
        self,
        network: nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: PredictionType = "epsilon",
        scheduler_config: dict | None = None,
    ):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise TeacherError(f"prediction_type {prediction_type!r}: expected 'epsilon', 'v_prediction' or 'sample'")
        self.network = network
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.schedule = SigmaSchedule(((1 - alphas_cumprod) / alphas_cumprod).sqrt().float())
        self.prediction_type = prediction_type
        self.sigma_min = float(self.schedule.sigmas[0])
        self.sigma_max = float(self.schedule.sigmas[-1])
        self.sigma_data = 1.0
        # What a diffusers scheduler needs to sample this teacher; by default the betas of its own schedule.
        betas = 1 - alphas_cumprod / torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        self.scheduler_config = dict(
            scheduler_config or {"num_train_timesteps": len(alphas_cumprod), "trained_betas": betas.tolist()}
        )

    @abc.abstractmethod
    def call_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The network's raw output on the VP-scaled input at fractional timestep t."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of sigma (interpolated in log sigma between grid points)."""
        return self.schedule.sigma_to_t(sigma)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        s = expand(sigma, x)
        scale = (s**2 + 1).rsqrt()  # x_t = x / sqrt(sigma^2 + 1) = sqrt(a_t) x
        output = self.call_model(x * scale, self.timestep(sigma), cond).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s * output
        if self.prediction_type == "v_prediction":
            return x * scale**2 - s * scale * output  # x0 = sqrt(a) x_t - sqrt(1 - a) v
        return output

    def bottleneck(self) -> nn.Module:
        return self.network.mid_block

    def time_embedding(self) -> tuple[nn.Module, int]:
        return self.network.time_embedding, self.network.time_embedding.linear_2.out_features

    def enable_gradient_checkpointing(self) -> None:
        self.network.enable_gradient_checkpointing()

    def prior_scale(self, sigma: float) -> float:
        """sqrt(sigma^2 + 1): unit noise z is then exactly the VP sample x_T = z that diffusers samplers start from."""
        return (sigma**2 + 1) ** 0.5

    def sigma_grid(self) -> torch.Tensor:
        """The teacher's own discrete sigmas, ascending."""
        return self.schedule.sigmas.clone()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Weight that turns ||D - x0||^2 into the teacher's own MSE: epsilon 1/s^2, v (s^2+1)/s^2, sample 1."""
        if self.prediction_type == "epsilon":
            return sigma**-2
        if self.prediction_type == "v_prediction":
            return (sigma**2 + 1) / sigma**2
        return torch.ones_like(sigma)


class DDPMDenoiser(DiscreteDenoiser):
    """A diffusers `UNet2DModel` (optionally class-conditional through `class_labels`)."""

    def call_model(self, x_t, t, cond):
        return self.network(x_t, t, class_labels=cond).sample


class LatentDenoiser(DiscreteDenoiser):
    """A diffusers `UNet2DConditionModel` in a latent space, conditioned on text embeddings."""

    def call_model(self, x_t, t, cond):
        if cond is None:
            raise ValueError("a text-conditioned UNet needs `cond`: the prompt embeddings [batch, tokens, dim]")
        return self.network(x_t, t, encoder_hidden_states=cond).sample


class SDXLDenoiser(DiscreteDenoiser):
    """SDXL's `UNet2DConditionModel`: token embeddings of both text encoders, plus (packed after them, see
    `text_condition`) the pooled embedding and the six size/crop ids as its `added_cond_kwargs`."""

    def __init__(self, network: nn.Module, *args, **kwargs):
        super().__init__(network, *args, **kwargs)
        config = network.config
        self.pooled_width = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim

    def call_model(self, x_t, t, cond):
        if cond is None:
            raise ValueError("SDXL needs `cond`: the packed prompt embeddings from the prompts stage")
        tokens, extras = unpack(cond, self.pooled_width + 6)
        added = {"text_embeds": extras[:, : self.pooled_width], "time_ids": extras[:, self.pooled_width :]}
        return self.network(x_t, t, encoder_hidden_states=tokens, added_cond_kwargs=added).sample


class DiTDenoiser(DiscreteDenoiser):
    """A class-conditional DiT (`DiTTransformer2DModel`); of a learned-variance output only the epsilon half is used,
    as DiTPipeline does. Its null class (index num_classes) serves classifier-free guidance."""

    def call_model(self, x_t, t, cond):
        output = self.network(x_t, timestep=t, class_labels=cond.long()).sample
        return output[:, : x_t.shape[1]]

    def bottleneck(self) -> nn.Module:
        return Denoiser.bottleneck(self)

    def time_embedding(self) -> tuple[nn.Module, int]:
        return Denoiser.time_embedding(self)
