"""The DM gradient, its weighting, the noise range and the generator's start, against exact answers."""

import logging

import pytest
import torch

from dmdlib.denoisers import Denoiser, GaussianMixtureDenoiser, trainable_copy
from dmdlib.denoisers.base import GRID_STEPS
from dmdlib.errors import MissingWeightsError
from dmdlib.generators.generator import Generator
from dmdlib.params import DistillParams
from dmdlib.training.distill import DistillInputs, distill, dm_sigma_fractions
from dmdlib.training.dmd import GeneratorBatch, Update, generator_step
from dmdlib.training.losses import DM_MAX_FRACTION, DM_MIN_FRACTION, distribution_matching_loss, sample_sigmas
from dmdlib.training.objectives import DistributionMatching
from dmdlib.training.regression import (
    LPIPSLoss,
    l2_loss,
    lpips_backbone_file,
    make_regression_loss,
    pseudo_huber_loss,
)

REAL = GaussianMixtureDenoiser(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), torch.tensor(0.2))
FAKE = GaussianMixtureDenoiser(torch.tensor([[0.0, 1.0], [0.5, -1.0], [1.0, 1.0]]), torch.tensor(0.4))


def test_dm_gradient_is_weighted_score_difference():
    x = torch.randn(16, 2, requires_grad=True)
    sigma = torch.linspace(0.05, 3.0, 16)
    noise = torch.randn(16, 2)
    dm = distribution_matching_loss(x, REAL, FAKE, sigma, noise)
    dm.loss.backward()

    noisy = x.detach() + sigma[:, None] * noise
    mu_real, mu_fake = REAL(noisy, sigma), FAKE(noisy, sigma)
    weight = 1 / (x.detach() - mu_real).abs().mean(1)  # paper eq. 8
    expected = weight[:, None] * (mu_fake - mu_real)
    assert torch.allclose(dm.weight, weight)
    assert torch.allclose(dm.grad, expected, atol=1e-6)
    # The mean reduction divides by numel; the direction and per-sample size are exactly the paper's.
    assert torch.allclose(x.grad * x.numel(), expected, atol=1e-6)

    # Gradient descent moves x along s_real - s_fake, computed from the exact mixture scores.
    score_difference = REAL.exact_score(noisy, sigma[:, None]) - FAKE.exact_score(noisy, sigma[:, None])
    step = -x.grad
    cosine = torch.nn.functional.cosine_similarity(step, score_difference, dim=1)
    assert torch.all(cosine > 0.9999)
    # s_real - s_fake = (mu_real - mu_fake) / sigma^2: the normaliser stands in for 1 / sigma^2.
    assert torch.allclose(-expected / weight[:, None] / sigma[:, None] ** 2, score_difference, rtol=1e-4, atol=1e-3)


def test_dm_gradient_vanishes_when_fake_equals_real():
    x = torch.randn(8, 2, requires_grad=True)
    dm = distribution_matching_loss(x, REAL, REAL, torch.full((8,), 0.5), torch.randn(8, 2))
    dm.loss.backward()
    assert torch.all(x.grad == 0)


def test_dm_guard_replaces_nan_and_inf():
    class Broken(torch.nn.Module):
        def forward(self, x, sigma, cond=None):
            out = x.clone()
            out[0, 0], out[1, 1] = float("nan"), float("inf")
            return out

    x = torch.randn(4, 2, requires_grad=True)
    dm = distribution_matching_loss(x, REAL, Broken(), torch.full((4,), 0.3), torch.randn(4, 2))
    dm.loss.backward()
    assert torch.isfinite(dm.loss) and torch.isfinite(x.grad).all()
    assert dm.grad[0, 0] == 0 and dm.grad[1, 1] == 0 and dm.grad[2].abs().sum() > 0


def test_dm_sigmas_stay_between_2_and_98_percent_of_the_grid():
    grid = REAL.sigma_grid()
    assert len(grid) == GRID_STEPS and torch.all(grid[1:] > grid[:-1])
    sigma = sample_sigmas(grid, 200_000, 0.02, 0.98, generator=torch.Generator().manual_seed(0))
    assert sigma.min() == grid[20] and sigma.max() == grid[979]
    whole = sample_sigmas(grid, 200_000, generator=torch.Generator().manual_seed(0))
    assert whole.min() == grid[0] and whole.max() == grid[-1]


class FreePoints(Denoiser):
    """A 'network' whose output is a trainable tensor, whatever its input: G(z) is that tensor itself."""

    def __init__(self, points: torch.Tensor):
        super().__init__()
        self.points = torch.nn.Parameter(points.clone())
        self.sample_shape = tuple(points.shape[1:])

    def denoise(self, x, sigma, cond):
        return self.points


class Recording(GaussianMixtureDenoiser):
    """The REAL mixture, recording the noisy inputs and sigmas it is asked about."""

    def __init__(self):
        super().__init__(REAL.means, REAL.stds)
        self.calls = []

    def denoise(self, x, sigma, cond):
        self.calls.append((x.clone(), sigma.clone()))
        return super().denoise(x, sigma, cond)


def test_generator_step_dm_update():
    """Through the training step itself: with SGD at lr 1 and no clipping, G's samples x move by
    dm_weight * w * sigma^2 * (s_real - s_fake)(x_s) / numel, with w = 1 / mean|x - mu_real| (paper eq. 7-8), and the
    scores and mu_real = x_s + sigma^2 s_real taken from the mixtures' exact formulas, not from D."""
    points = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    generator, real = Generator(FreePoints(points), [80.0]), Recording()
    terms = {"dm": DistributionMatching(real_denoiser=real, fake_denoiser=FAKE, weight=0.5)}
    update = Update(torch.optim.SGD(generator.parameters(), lr=1.0), max_grad_norm=None)
    generator_step(generator, update, GeneratorBatch(torch.zeros(64, 2)), torch.Generator().manual_seed(0), terms=terms)

    ((noisy, sigma),) = real.calls
    s = sigma[:, None]
    mu_real = noisy + s**2 * REAL.exact_score(noisy, sigma)
    weight = 1 / (points - mu_real).abs().mean(1, keepdim=True)
    score_difference = REAL.exact_score(noisy, sigma) - FAKE.exact_score(noisy, sigma)
    expected = points + 0.5 * weight * s**2 * score_difference / points.numel()
    assert torch.allclose(generator.denoiser.points.detach(), expected, rtol=1e-4, atol=1e-7)
    assert sigma.min() >= REAL.sigma_grid()[20] and sigma.max() <= REAL.sigma_grid()[979]  # paper: 2%-98%


def test_default_dm_sigmas(tmp_path):
    """The defaults themselves (not literals), through `distill`: every sigma the real denoiser is asked about."""
    from test_dmd2 import tiny_teacher

    params = DistillParams(steps=2, batch_size=1024, lambda_reg=0.0, checkpoint_every=10, sample_every=10)
    assert (
        params.dm_sigma_fractions == (DM_MIN_FRACTION, DM_MAX_FRACTION) == (0.02, 0.98) and params.dm_sigma_max == 10.0
    )
    assert DistributionMatching(real_denoiser=REAL, fake_denoiser=FAKE).sigma_fractions == (
        0.02,
        0.98,
    )  # the library's default too
    teacher, real = tiny_teacher(), tiny_teacher()
    grid = teacher.sigma_grid()
    assert grid[0] == pytest.approx(0.002) and grid[-1] == pytest.approx(80.0)
    low, high = dm_sigma_fractions(grid, params)
    assert low == 0.02 and high == int((grid <= 10.0).sum()) / GRID_STEPS
    sigmas = []
    real.register_forward_pre_hook(lambda module, args: sigmas.append(args[1]))
    distill(teacher, params, tmp_path / "ck.pt", DistillInputs(real_denoiser=real))
    sigma = torch.cat(sigmas)
    assert len(sigma) == 2 * 1024
    assert grid[20] <= sigma.min() < grid[30]  # from the 2% point of the grid
    assert grid[int(high * GRID_STEPS) - 10] < sigma.max() <= 10.0 < grid[979]  # to the cap, below the 98% point


def test_generator_starts_as_teacher_at_sigma_max():
    generator = Generator.from_teacher(REAL)
    z = torch.randn(32, 2)
    s = REAL.sigma_max
    # Exact: the mixture's posterior mean at x = s z, computed by hand.
    x = s * z
    variance = 0.04 + s**2
    logits = -((x[:, None] - REAL.means) ** 2).sum(-1) / (2 * variance)
    posterior = REAL.means + 0.04 / variance * (x[:, None] - REAL.means)
    expected = (logits.softmax(1)[..., None] * posterior).sum(1)
    assert torch.allclose(generator(z), expected, atol=1e-5)


def test_trainable_copies_are_independent_of_the_teacher():
    """A copy starts at the teacher's weights, in its own memory, in training mode; the teacher stays frozen."""
    teacher = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).eval().requires_grad_(False)
    copy = trainable_copy(teacher)
    assert all(torch.equal(a, b) for a, b in zip(copy.parameters(), teacher.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copy.parameters(), teacher.parameters()))
    assert copy.training and all(p.requires_grad for p in copy.parameters())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_l2_and_pseudo_huber():
    x, y = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    assert torch.allclose(l2_loss(x, y), torch.ones(2))
    c = 0.00054 * 4
    assert torch.allclose(pseudo_huber_loss(x, y), torch.full((2,), (16 + c**2) ** 0.5 - c))
    assert torch.allclose(pseudo_huber_loss(x, x), torch.zeros(2))


def test_lpips_missing_weights_names_file_and_fallback_is_opt_in(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected_file = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert lpips_backbone_file("vgg") == expected_file
    with pytest.raises(MissingWeightsError) as info:
        make_regression_loss("lpips", "vgg")
    assert str(expected_file) in str(info.value) and "copy it to" in str(info.value)
    with caplog.at_level(logging.WARNING):
        loss = make_regression_loss("lpips", "vgg", fallback="l2")
    assert loss is l2_loss
    assert "using the 'l2' regression loss instead" in caplog.text


def test_lpips_runs_on_small_grey_images_with_local_backbone(tmp_path, monkeypatch):
    from torchvision.models import squeezenet1_1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = lpips_backbone_file("squeeze")
    backbone.parent.mkdir(parents=True)
    torch.save(squeezenet1_1().state_dict(), backbone)  # random weights in the real file layout
    loss = make_regression_loss("lpips", "squeeze")
    assert isinstance(loss, LPIPSLoss)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    y = torch.rand(3, 1, 16, 16) * 2 - 1
    same, different = loss(x, x), loss(x, y)
    assert same.shape == (3,) and torch.allclose(same, torch.zeros(3), atol=1e-6)
    assert torch.all(different > 0)
    # LPIPS's own network on [-1, 1] images, grey repeated to RGB and upsampled bilinearly to 224 (paper Appendix C)
    prepare = lambda v: torch.nn.functional.interpolate(v.repeat(1, 3, 1, 1), size=224, mode="bilinear")  # noqa: E731
    assert torch.allclose(different, loss.model(prepare(x), prepare(y)).flatten(), rtol=1e-5)
    x.requires_grad_(True)
    loss(x, y).sum().backward()
    assert x.grad.abs().sum() > 0
