"""The rectified-flow adapter against exact answers: a flow teacher made from an analytic Gaussian mixture (its
velocity from the mixture's posterior mean) is the same denoiser, gives the same DM gradient, and its fake-denoiser
loss is its own velocity MSE; the noise grid and shifts are diffusers' own."""

import math

import pytest
import torch

from dmdlib.denoisers import GaussianMixtureDenoiser
from dmdlib.denoisers.base import denoising_loss, expand
from dmdlib.denoisers.flow import FlowMatchDenoiser, flow_shift, shift_times, sigma_of_time, time_of_sigma
from dmdlib.training.losses import distribution_matching_loss


class MixtureVelocity(torch.nn.Module):
    """The exact velocity of the flow whose data is `mixture`: v = (x_t - E[x0 | x_t]) / t, with E[x0 | x_t] the
    mixture's posterior mean at the VE point x_t / (1 - t), sigma = t / (1 - t)."""

    def __init__(self, mixture: GaussianMixtureDenoiser):
        super().__init__()
        self.mixture = mixture

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t64 = t.double()
        x = (x_t.double() / expand(1 - t64, x_t)).float()
        x0 = self.mixture(x, sigma_of_time(t64).float())
        return (x_t - x0) / expand(t, x_t)


class MixtureFlow(FlowMatchDenoiser):
    def call_model(self, x_t, t, cond):
        return self.network(x_t, t)


def mixtures():
    real = GaussianMixtureDenoiser.ring(modes=4, radius=1.0, std=0.2)
    fake = GaussianMixtureDenoiser.ring(modes=3, radius=0.7, std=0.3)
    return real, fake


def test_flow_mixture():
    """A flow teacher of a mixture is the mixtures denoiser and gives the same dm gradient."""
    real, fake = mixtures()
    real_flow, fake_flow = MixtureFlow(MixtureVelocity(real), shift=3.0), MixtureFlow(MixtureVelocity(fake), shift=3.0)
    rng = torch.Generator().manual_seed(0)
    x0 = real.sample(64, generator=rng)
    sigma = real_flow.sigma_grid()[torch.randint(20, 960, (64,), generator=rng)]  # t from about 0.06 to 0.99
    noise = torch.randn(x0.shape, generator=rng)
    noisy = x0 + expand(sigma, x0) * noise
    assert torch.allclose(real_flow(noisy, sigma), real(noisy, sigma), atol=1e-4, rtol=1e-4)
    flow_dm = distribution_matching_loss(x0, real_flow, fake_flow, sigma, noise)
    ve_dm = distribution_matching_loss(x0, real, fake, sigma, noise)
    assert torch.allclose(flow_dm.grad, ve_dm.grad, atol=1e-3, rtol=1e-3)
    assert flow_dm.loss.item() == pytest.approx(ve_dm.loss.item(), rel=1e-3)


def test_flow_fake_loss():
    """denoising_loss noises x0 in VE space (x0 + sigma n), which is the flow's x_t = (1 - t) x0 + t n with the same
    n: weighted by 1/t^2 = ((1 + sigma) / sigma)^2, the x0 error is exactly ||v - (n - x0)||^2."""
    real, fake = mixtures()
    fake_flow = MixtureFlow(MixtureVelocity(fake), shift=3.0)
    rng = torch.Generator().manual_seed(1)
    x0, noise = real.sample(32, generator=rng), torch.randn(32, 2, generator=rng)
    sigma = fake_flow.sigma_grid()[torch.randint(0, 999, (32,), generator=rng)]
    t = time_of_sigma(sigma.double()).float()
    x_t = expand(1 - t, x0) * x0 + expand(t, x0) * noise
    velocity_mse = (fake_flow.network(x_t, t) - (noise - x0)).pow(2).mean(1).mean()
    assert denoising_loss(fake_flow, x0, sigma, noise).item() == pytest.approx(velocity_mse.item(), rel=1e-4)


def test_the_noise_grid_and_shifts_are_diffusers_own():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow = MixtureFlow(torch.nn.Identity(), shift=3.0)
    times = time_of_sigma(flow.sigma_grid().double())
    # the scheduler's 1000 training times shifted, 1.0 first: every one but t = 1, ascending
    assert torch.allclose(times.float(), scheduler.sigmas[1:].flip(0), atol=1e-6)
    assert flow.sigma_max == pytest.approx(
        float(sigma_of_time(shift_times(torch.tensor(0.999, dtype=torch.float64), 3.0)))
    )
    config = {
        "use_dynamic_shifting": True,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "base_shift": 0.5,
        "max_shift": 1.15,
    }
    mu = calculate_shift(1024, 256, 4096, 0.5, 1.15)
    assert flow_shift(config, image_seq_len=1024) == pytest.approx(math.exp(mu))
    assert flow_shift({"shift": 3.0}) == 3.0
    z = torch.randn(4, 2)
    assert torch.allclose(
        z * flow.prior_scale(flow.sigma_max) / (1 + flow.sigma_max), z
    )  # G's input is the flow's x_t = z
