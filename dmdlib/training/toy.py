"""A 2-D toy of the whole method: an analytic 8-Gaussian ring teacher distilled into an MLP in one step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dmdlib.denoisers import GaussianMixtureDenoiser, KarrasDenoiser, trainable_copy
from dmdlib.denoisers.base import denoising_loss
from dmdlib.denoisers.sampling import heun_sample
from dmdlib.generators.generator import Generator
from dmdlib.training.dmd import GeneratorBatch, Pairs, Update, fake_denoiser_step, generator_step
from dmdlib.training.losses import sample_sigmas
from dmdlib.training.objectives import DistributionMatching, Regression, ScoreIdentity
from dmdlib.training.regression import l2_loss


class ToyMLP(nn.Module):
    """F(c_in x, sigma) for 2-D points: an MLP on the point and Fourier features of log(sigma) / 4."""

    def __init__(self, dims: int = 2, width: int = 128, depth: int = 3, frequencies: int = 8):
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, frequencies + 1, dtype=torch.float32) * math.pi / 2)
        layers: list[nn.Module] = [nn.Linear(dims + 2 * frequencies, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, dims))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        angle = (sigma.log() / 4)[:, None] * self.frequencies  # EDM's c_noise = log(sigma) / 4
        return self.net(torch.cat([x, angle.sin(), angle.cos()], dim=1))


def toy_teacher() -> GaussianMixtureDenoiser:
    """8 Gaussians (std 0.1) on a circle of radius 2; sigma_data is the data's per-coordinate std."""
    return GaussianMixtureDenoiser.ring(modes=8, radius=2.0, std=0.1, sigma_data=math.sqrt(2.0 + 0.01))


def fit_denoiser(
    teacher: GaussianMixtureDenoiser, steps: int, batch: int, lr: float, rng: torch.Generator
) -> KarrasDenoiser:
    """Train an MLP denoiser on exact teacher samples with the teacher's loss: the toy's 'teacher network'."""
    network = KarrasDenoiser(
        ToyMLP(), sigma_data=teacher.sigma_data, sigma_min=teacher.sigma_min, sigma_max=teacher.sigma_max
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    grid = teacher.sigma_grid()
    for _ in range(steps):
        x0 = teacher.sample(batch, generator=rng)
        loss = denoising_loss(
            network, x0, sample_sigmas(grid, batch, generator=rng), torch.randn(x0.shape, generator=rng)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return network.requires_grad_(False)


@dataclass
class ToyRun:
    teacher_network: KarrasDenoiser
    pairs: Pairs


def prepare_toy(seed: int = 0, fit_steps: int = 1000, pair_count: int = 16) -> ToyRun:
    """The teacher network (init of generator and fake) and Heun-18 ODE pairs from the analytic teacher."""
    rng = torch.Generator().manual_seed(seed)
    teacher = toy_teacher()
    network = fit_denoiser(teacher, fit_steps, batch=512, lr=2e-3, rng=rng)
    noise = torch.randn(pair_count, 2, generator=rng)
    return ToyRun(network, Pairs(noise=noise, target=heun_sample(teacher, noise, steps=18)))


def distill_toy(
    run: ToyRun,
    steps: int,
    objective: str = "dmd",
    lambda_reg: float = 0.5,
    batch_size: int = 256,
    lr: float = 1e-3,
    fake_steps: int = 5,
    seed: int = 0,
) -> Generator:
    """Distil the toy with the image pipeline's own step functions: objective 'dmd' (DM + regression on the pairs),
    'regression' (the pairs alone) or 'sid' (SiD's score identity alone, data-free, on 30%-80% of the grid)."""
    rng = torch.Generator().manual_seed(seed)
    real_denoiser = toy_teacher()
    generator = Generator.from_teacher(run.teacher_network)
    fake_denoiser = trainable_copy(run.teacher_network)
    generator_update = Update(torch.optim.AdamW(generator.parameters(), lr=lr, weight_decay=0.01))
    fake_update = Update(torch.optim.AdamW(fake_denoiser.parameters(), lr=lr, weight_decay=0.01))
    denoisers = dict(real_denoiser=real_denoiser, fake_denoiser=fake_denoiser)
    terms = {
        "dmd": {"dm": DistributionMatching(**denoisers), "reg": Regression(distance=l2_loss, weight=lambda_reg)},
        "regression": {"reg": Regression(distance=l2_loss, weight=lambda_reg)},
        "sid": {"sid": ScoreIdentity(**denoisers, sigma_fractions=(0.3, 0.8))},
    }[objective]
    # Linear decay to zero: the stochastic DM gradient otherwise leaves the small MLP jittering around the target.
    decay = torch.optim.lr_scheduler.LambdaLR(generator_update.optimizer, lambda step: 1 - step / steps)
    for _ in range(steps):
        batch = GeneratorBatch(torch.randn(batch_size, 2, generator=rng), pairs=run.pairs)
        x = generator_step(generator, generator_update, batch, rng, terms=terms).x
        trains_fake = any(term.uses_fake for term in terms.values())
        for update in range(fake_steps if trains_fake else 0):  # DMD2: fresh generator samples for every update
            if update > 0:
                with torch.no_grad():
                    x = generator(torch.randn(batch_size, 2, generator=rng))
            fake_denoiser_step(fake_denoiser, fake_update, x, None, rng)
        decay.step()
    return generator.requires_grad_(False)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between equal-size point clouds, averaged over random directions."""
    rng = torch.Generator().manual_seed(seed)
    directions = torch.randn(a.shape[1], projections, generator=rng)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa, _ = (a @ directions).sort(dim=0)
    pb, _ = (b @ directions).sort(dim=0)
    return float((pa - pb).abs().mean())


def mode_shares(points: torch.Tensor, teacher: GaussianMixtureDenoiser) -> torch.Tensor:
    """Share of points whose nearest mode is each mixture component."""
    nearest = torch.cdist(points, teacher.means).argmin(dim=1)
    return torch.bincount(nearest, minlength=len(teacher.means)).float() / len(points)
