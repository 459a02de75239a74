"""Discrete-time (DDPM) teachers distil like EDM ones: the same analytic mixture behind an epsilon-prediction DDPM
parameterisation (sigma_max about 157) and behind EDM's, each with a trainable residual that starts at zero; and
an epsilon MLP teacher trained here in seconds."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from dmdlib.denoisers import Denoiser, DiscreteDenoiser, GaussianMixtureDenoiser
from dmdlib.denoisers.base import expand
from dmdlib.denoisers.sampling import heun_sample
from dmdlib.generators.generator import MAX_START_OUTPUT_SCALE, Generator, start_sigma
from dmdlib.params import DistillParams
from dmdlib.training.distill import DistillInputs, distill
from dmdlib.training.regression import l2_loss

MIXTURE = GaussianMixtureDenoiser.ring(modes=8, radius=2.0, std=0.1, sigma_data=math.sqrt(2.01))


class Residual(nn.Module):
    """An MLP of the point and Fourier features of a noise input, its last layer zero: it starts as nothing."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, 9, dtype=torch.float32) * math.pi / 2)
        self.net = nn.Sequential(
            nn.Linear(18, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, noise_input: torch.Tensor) -> torch.Tensor:
        angle = noise_input[:, None] * self.frequencies
        return self.net(torch.cat([x, angle.sin(), angle.cos()], dim=1))


class EpsilonMixture(DiscreteDenoiser):
    """The mixture as a DDPM network predicting epsilon from (x_t, t), plus a residual: D = x - sigma * eps."""

    def call_model(self, x_t, t, cond):
        sigma = self.schedule.t_to_sigma(t)
        x = x_t * expand((sigma**2 + 1).sqrt(), x_t)
        exact = (x - MIXTURE(x, sigma)) / expand(sigma, x)
        return exact + self.network(x_t, t / 1000)


class EDMMixture(Denoiser):
    """The same mixture in EDM's preconditioning, on the same sigma grid: D = c_skip x + c_out F, F = F_exact +
    residual."""

    def __init__(self, grid: torch.Tensor):
        super().__init__()
        self.network, self.grid = Residual(), grid
        self.sigma_min, self.sigma_max, self.sigma_data = float(grid[0]), float(grid[-1]), MIXTURE.sigma_data

    def sigma_grid(self):
        return self.grid.clone()

    def denoise(self, x, sigma, cond):
        s, sd = expand(sigma, x), self.sigma_data
        c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), (s**2 + sd**2).rsqrt()
        exact = (MIXTURE(x, sigma) - c_skip * x) / c_out
        return c_skip * x + c_out * (exact + self.network(c_in * x, sigma.log() / 4))


class Pairs:
    def __init__(self, noise, target):
        self.noise, self.target, self.labels = noise, target, torch.full((len(noise),), -1)

    def __len__(self):
        return len(self.noise)

    def batch(self, index):  # as PairReader
        return self.noise[index], self.target[index], self.labels[index]


def teachers():
    torch.manual_seed(0)
    epsilon = EpsilonMixture(Residual(), DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, "epsilon")
    epsilon.sample_shape = (2,)
    edm = EDMMixture(epsilon.sigma_grid())
    edm.network.load_state_dict(epsilon.network.state_dict())
    edm.sample_shape = (2,)
    return {"epsilon": epsilon.requires_grad_(False), "edm": edm.requires_grad_(False)}


def regression_curve(teacher: Denoiser, tmp_path, steps: int = 600) -> list[float]:
    """Means over 50-step windows of the regression loss of a default distillation (DM term from step 100)."""
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    pairs = Pairs(noise, heun_sample(teacher, noise, 18))  # the mixture's own ODE: both residuals start at zero
    params = DistillParams(
        steps=steps,
        batch_size=64,
        reg_batch_size=64,
        generator_lr=1e-3,
        checkpoint_every=10_000,
        sample_every=10_000,
        ema_decay=None,
    )
    losses = []
    distill(
        teacher,
        params,
        tmp_path / f"{type(teacher).__name__}.pt",
        DistillInputs(pairs, l2_loss),
        on_step=lambda step, metrics, generator: losses.append(metrics["loss_reg"]),
    )
    return [sum(losses[i : i + 50]) / 50 for i in range(0, steps, 50)]


def test_generator_start():
    """The one step generator starts at the teachers own x0 prediction where it is well conditioned."""
    epsilon, edm = teachers().values()
    assert epsilon.sigma_max == pytest.approx(157.4, abs=0.1) and edm.sigma_max == epsilon.sigma_max
    assert start_sigma(edm) == edm.sigma_max  # EDM preconditioning: c_out <= sigma_data everywhere
    # epsilon: c_out = sigma; the start is the largest grid sigma within the cap, so a diffusers scheduler can take it
    grid = epsilon.sigma_grid()
    start = start_sigma(epsilon)
    assert start in grid.tolist() and start <= MAX_START_OUTPUT_SCALE < grid[grid > start].min()
    assert start == pytest.approx(MAX_START_OUTPUT_SCALE, rel=0.02)
    for teacher in (epsilon, edm):
        z, sigma = torch.randn(16, 2), start_sigma(teacher)
        generator = Generator.from_teacher(teacher)
        assert generator.sigma == sigma
        assert torch.equal(generator(z), teacher(z * teacher.prior_scale(sigma), sigma))


def test_epsilon_distils_like_edm(tmp_path):
    """An epsilon teacher distils as steadily as the same mixture in edm form."""
    curves = {name: regression_curve(teacher, tmp_path) for name, teacher in teachers().items()}
    print({name: [round(x, 4) for x in curve] for name, curve in curves.items()})
    for curve in curves.values():
        assert all(b < a * 1.05 for a, b in zip(curve, curve[1:])), curve  # no 50-step mean rises by 5%
        assert curve[-1] < curve[0] / 3
    assert curves["epsilon"][-1] < 1.5 * curves["edm"][-1]


@pytest.mark.slow
def test_dm_term_end_to_end(tmp_path):
    """End to end through `distill` (DMD2's fake-step ratio 5): with 16 pairs, regression alone cannot recover the
    8-mode ring; the DM term must bring the generator closer to it in both parameterisations (a wrong DM gradient,
    e.g. its sign flipped, drives the samples off the ring instead)."""
    from dmdlib.training.toy import sliced_wasserstein

    reference = MIXTURE.sample(2000, generator=torch.Generator().manual_seed(5))
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(6))
    for name, teacher in teachers().items():
        noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
        pairs = Pairs(noise, heun_sample(teacher, noise, 18))
        distances = {}
        for dm_weight in (1.0, 0.0):
            params = DistillParams(
                steps=600,
                batch_size=64,
                reg_batch_size=16,
                generator_lr=1e-3,
                fake_lr=1e-3,
                fake_steps=5,
                dm_weight=dm_weight,
                dm_sigma_max=None,
                ema_decay=None,
                checkpoint_every=10_000,
                sample_every=10_000,
            )
            generator, _ = distill(teacher, params, tmp_path / f"{name}-{dm_weight}.pt", DistillInputs(pairs, l2_loss))
            with torch.no_grad():
                distances[dm_weight] = sliced_wasserstein(generator(z), reference)
        print(name, distances)
        assert distances[1.0] < distances[0.0] / 1.2, (name, distances)


class MLPTeacher(DiscreteDenoiser):
    """A DDPM network of 2-D points: epsilon or v from (x_t, t) by the residual MLP alone, trained here."""

    def call_model(self, x_t, t, cond):
        return self.network(x_t, t / 1000)


def trained_teacher(beta_schedule: str = "linear", prediction_type: str = "epsilon") -> MLPTeacher:
    """A DDPM teacher of the ring trained in seconds by the plain diffusers recipe: 1000 betas of the schedule,
    uniform t, the MSE of the epsilon or velocity target."""
    torch.manual_seed(0)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=prediction_type)
    network = Residual(width=128)
    nn.init.normal_(network.net[-1].weight, std=0.01)
    teacher = MLPTeacher(network, scheduler.alphas_cumprod, prediction_type)
    teacher.sample_shape = (2,)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    rng = torch.Generator().manual_seed(0)
    for _ in range(1500):
        x0, noise = MIXTURE.sample(256, generator=rng), torch.randn(256, 2, generator=rng)
        t = torch.randint(0, 1000, (256,), generator=rng)
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
        loss = (network(scheduler.add_noise(x0, noise, t), t / 1000) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher.requires_grad_(False)


def test_trained_epsilon_start():
    """Trained on 1000 linear betas: its one-step prediction is far better at start_sigma than at sigma_max, where
    eps errors grow 157 times."""
    teacher = trained_teacher()
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    target = heun_sample(teacher, z, 18)
    errors = {
        name: float((teacher(z * teacher.prior_scale(s), s) - target).pow(2).mean().sqrt())
        for name, s in (("sigma_max", teacher.sigma_max), ("start", start_sigma(teacher)))
    }
    assert errors["start"] < errors["sigma_max"] / 3, errors


@pytest.mark.parametrize(
    "beta_schedule, prediction_type",
    [
        ("squaredcos_cap_v2", "epsilon"),
        ("squaredcos_cap_v2", "v_prediction"),
        ("linear", "epsilon"),
        ("linear", "v_prediction"),
    ],
)
def test_every_ddpm_recipes_ode_pairs_land_on_the_data(beta_schedule, prediction_type):
    """The pairs' Heun ODE from each recipe's trained teacher ends on the ring. A cosine schedule's sigma_max is
    20,290: an epsilon teacher's small error there, integrated over thousands of sigma, threw its Heun samples 20
    times the data's size away when the ODE started at sigma_max rather than at EDM's 80."""
    from dmdlib.training.toy import sliced_wasserstein

    teacher = trained_teacher(beta_schedule, prediction_type)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    samples = heun_sample(teacher, z, 18)
    data_rms = (4 / 2 + 0.1**2) ** 0.5  # radius 2 on 2 coordinates, std 0.1
    distance = sliced_wasserstein(samples, MIXTURE.sample(1000, generator=torch.Generator().manual_seed(2)))
    rms = float(samples.pow(2).mean().sqrt())
    assert abs(rms / data_rms - 1) < 0.05 and distance < 0.3, (rms, distance)  # from sigma_max: 17%, 0.45


def test_a_class_conditional_ddpm_unet_gets_its_labels():
    """Before: a UNet2DModel teacher called without class_labels, ignoring them, passed every test."""
    from diffusers import UNet2DModel
    from tiny_models import tiny_unet2d

    from dmdlib.denoisers import DDPMDenoiser

    torch.manual_seed(0)
    unet = tiny_unet2d(num_class_embeds=3)
    schedule = DDPMScheduler(num_train_timesteps=1000)
    denoiser = DDPMDenoiser(unet, schedule.alphas_cumprod)
    assert isinstance(unet, UNet2DModel)
    x, sigma = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([2.0, 2.0])
    with torch.no_grad():
        zero, one = denoiser(x, sigma, torch.tensor([0, 0])), denoiser(x, sigma, torch.tensor([1, 1]))
        t = denoiser.timestep(sigma)
        epsilon = unet(x / (sigma**2 + 1).sqrt()[:, None, None, None], t, class_labels=torch.tensor([1, 1])).sample
    assert not torch.allclose(zero, one, atol=1e-4)
    assert torch.allclose(one, x - sigma[:, None, None, None] * epsilon, atol=1e-5)  # diffusers' own call, by hand


def test_the_regression_pairs_start_from_the_prior_scaled_noise():
    """A DDPM generator starts from z * sqrt(sigma^2 + 1), the x_T of a diffusers pipeline; the pairs' noise takes
    the same path (before, scaling it by sigma passed every test)."""
    from dmdlib.training import dmd
    from dmdlib.training.objectives import Regression

    teacher = teachers()["epsilon"]
    generator = Generator.from_teacher(teacher, [10.0])
    assert teacher.prior_scale(10.0) != 10.0
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    target = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = l2_loss(generator(noise), target).mean()
    terms = {"reg": Regression(distance=l2_loss)}
    update = dmd.Update(torch.optim.SGD(generator.parameters(), lr=0.0))
    batch = dmd.GeneratorBatch(torch.zeros(1, 2), pairs=dmd.Pairs(noise, target))
    result = dmd.generator_step(generator, update, batch, torch.Generator().manual_seed(2), terms=terms)
    assert result.metrics["loss_reg"] == pytest.approx(float(expected), rel=1e-5)
