"""Score identity Distillation against exact answers: its generator gradient on analytic Gaussian mixtures equals the
closed form from their posterior covariances; gradients reach G through both denoisers, none their weights."""

import json

import pytest
import torch
from test_dmd2 import tiny_teacher
from test_losses import FAKE, REAL, FreePoints  # the DM tests' mixtures and free-point generator
from tiny_models import (
    save_tiny_ddpm,
    save_tiny_dit,
    save_tiny_flux,
    save_tiny_sd3,
    save_tiny_sdxl,
    save_tiny_stable_diffusion,
    tiny_kdiffusion_config,
)
from tiny_project import run_stages, write_tiny_project

from dmdlib.denoisers import GaussianMixtureDenoiser, trainable_copy
from dmdlib.denoisers.conditions import Conditions
from dmdlib.denoisers.edm import EDMDenoiser, build_network
from dmdlib.generators.generator import Generator
from dmdlib.params import DistillParams
from dmdlib.teachers.families import load_teacher
from dmdlib.teachers.loading import build_kdiffusion
from dmdlib.teachers.prompt_encoders import PromptEncoder
from dmdlib.training.distill import DistillInputs, distill
from dmdlib.training.dmd import GeneratorBatch, RealBatch, Update, generator_step
from dmdlib.training.losses import sample_sigmas, score_identity_loss
from dmdlib.training.objectives import ScoreIdentity


def posterior(mixture: GaussianMixtureDenoiser, x: torch.Tensor, sigma: torch.Tensor):
    """E[x0 | x] and d E[x0 | x] / dx = Cov[x0 | x] / sigma^2 (Tweedie), from the mixture's components: each
    component's posterior is N(mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k), s_k^2 sigma^2 / (s_k^2 + sigma^2) I)."""
    x, sigma = x.double(), sigma.double()
    responsibilities = mixture.responsibilities(x.float(), sigma.float()).double()  # [B, K]
    stds2, means = mixture.stds.double() ** 2, mixture.means.double()
    variance = stds2 + sigma[:, None] ** 2
    component_means = means + (stds2 / variance)[..., None] * (x[:, None] - means)  # [B, K, d]
    component_variance = stds2 * sigma[:, None] ** 2 / variance  # [B, K]
    mean = (responsibilities[..., None] * component_means).sum(1)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    second = (
        responsibilities[..., None, None]
        * (component_variance[..., None, None] * eye + component_means[..., :, None] * component_means[..., None, :])
    ).sum(1)
    covariance = second - mean[:, :, None] * mean[:, None, :]
    return mean, covariance / sigma[:, None, None] ** 2


def closed_form_gradient(x, sigma, noise, alpha):
    """d/dx of mean_pixels w (r - f).((r - x) - alpha (r - f)), r and f at x + sigma n, w = 1 / mean|x - r| held
    fixed: w / N [(J_r - J_f)((r - x) - alpha (r - f)) + (J_r - I - alpha (J_r - J_f))(r - f)], J symmetric."""
    noisy = x.double() + sigma.double()[:, None] * noise.double()
    r, jacobian_r = posterior(REAL, noisy, sigma)
    f, jacobian_f = posterior(FAKE, noisy, sigma)
    weight = 1 / (x.double() - r).abs().mean(1)
    difference, eye = r - f, torch.eye(x.shape[1], dtype=torch.float64)
    first = ((jacobian_r - jacobian_f) @ ((r - x.double()) - alpha * difference)[..., None])[..., 0]
    second = ((jacobian_r - eye - alpha * (jacobian_r - jacobian_f)) @ difference[..., None])[..., 0]
    return (weight[:, None] * (first + second) / x.numel()).float()


@pytest.mark.parametrize("alpha", [1.2, 0.5])
def test_sid_gradient_is_the_closed_form(alpha):
    rng = torch.Generator().manual_seed(0)
    x = (2 * torch.randn(16, 2, generator=rng)).requires_grad_(True)
    sigma, noise = torch.linspace(0.1, 3.0, 16), torch.randn(16, 2, generator=rng)
    sid = score_identity_loss(x, REAL, FAKE, sigma, noise, alpha=alpha)
    sid.loss.backward()
    assert torch.allclose(x.grad, closed_form_gradient(x.detach(), sigma, noise, alpha), rtol=1e-3, atol=1e-6)
    mu_real = REAL(x.detach() + sigma[:, None] * noise, sigma)
    assert torch.allclose(sid.weight, 1 / (x.detach() - mu_real).abs().mean(1))  # eq. 8's normaliser, no gradient


def test_sid_vanishes_where_the_fake_is_the_real():
    x = torch.randn(8, 2, requires_grad=True)
    sid = score_identity_loss(x, REAL, REAL, torch.full((8,), 0.5), torch.randn(8, 2))
    sid.loss.backward()
    assert float(sid.loss.detach()) == 0 and torch.allclose(x.grad, torch.zeros(8, 2), atol=1e-7)


def test_the_sid_term_moves_the_generator_by_the_closed_form_and_leaves_the_fake_alone():
    """Through generator_step (SGD lr 1, no clipping): the points move by minus the closed-form gradient, and the fake
    denoiser, trainable, gets no gradient from the generator's step."""
    points = 2 * torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    generator, fake = Generator(FreePoints(points), [80.0]), trainable_copy(FAKE)
    fake.means = torch.nn.Parameter(fake.means.clone())  # a fake denoiser with weights of its own
    term = ScoreIdentity(real_denoiser=REAL, fake_denoiser=fake, sigma_fractions=(0.3, 0.7), weight=0.5)
    update = Update(torch.optim.SGD(generator.parameters(), lr=1.0), max_grad_norm=None)
    batch = GeneratorBatch(torch.zeros(32, 2))
    generator_step(generator, update, batch, torch.Generator().manual_seed(5), terms={"sid": term})
    assert fake.means.grad is None and fake.means.requires_grad

    rng = torch.Generator().manual_seed(5)  # the same draws as the term: sigmas, then noise
    sigma = sample_sigmas(REAL.sigma_grid(), 32, 0.3, 0.7, generator=rng)
    noise = torch.randn(32, 2, generator=rng)
    expected = points - 0.5 * closed_form_gradient(points, sigma, noise, 1.2)
    assert torch.allclose(generator.denoiser.points.detach(), expected, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, curves",
    [
        ("  objective: sid\n  lambda_reg: 0.5\n", {"loss_sid", "loss_fake"}),
        ("  objective: sida\n  gan_generator_weight: 0.01\n", {"loss_sid", "loss_gan_generator", "loss_gan_head"}),
    ],
)
def test_sid_and_sida_through_the_stages_without_pairs(tmp_path, options, curves):
    """Data-free: with no pairs folder at all (and lambda_reg left on), distill runs and evaluate measures it."""
    write_tiny_project(
        tmp_path,
        tiny_teacher(),
        "features:\n  steps: 5\n  batch_size: 8\n"
        "pairs:\n  steps: 2\n"  # its guidance is the real denoiser's; no pairs are made
        "distill:\n  steps: 2\n  batch_size: 2\n  sample_every: 2\n"
        + options
        + "evaluate:\n  samples: 12\n  speed_batch_size: 4\n  speed_repeats: 1\n",
    )
    run_stages(tmp_path, ["features", "teacher", "distill", "evaluate"])
    assert not (tmp_path / "pairs").exists()
    live = {path.stem for path in (tmp_path / "live" / "plots" / "metrics").glob("*.tsv")}
    assert curves <= live and "loss_dm" not in live and "loss_reg" not in live
    assert json.loads((tmp_path / "eval.json").read_text())["dmd_one_step"]["nfe"] == 1


def _family_teacher(kind: str, folder):
    """(frozen teacher, Conditions or None) of a tiny model of each family, loaded by the real loaders."""
    torch.manual_seed(0)
    if kind in ("kdiffusion", "edm"):
        kwargs = dict(img_resolution=8, img_channels=3, model_channels=16, channel_mult=[1, 2], num_blocks=1)
        teacher = (
            build_kdiffusion(tiny_kdiffusion_config())
            if kind == "kdiffusion"
            else EDMDenoiser(build_network("EDMPrecond", dict(model_type="DhariwalUNet", label_dim=3, **kwargs)))
        )
        return teacher.eval(), Conditions.of(teacher)
    builders = {
        "diffusers_ddpm": save_tiny_ddpm,
        "stable_diffusion": save_tiny_stable_diffusion,
        "sdxl": save_tiny_sdxl,
        "dit": save_tiny_dit,
        "sd3": save_tiny_sd3,
        "flux": save_tiny_flux,
    }
    path = builders[kind](folder)
    reference = {
        "kind": kind,
        "path": str(path),
        "resolution": 16 if kind == "flux" else None,
        "embedded_guidance": 1.0,
    }
    teacher = load_teacher(reference)
    if kind in ("stable_diffusion", "sdxl", "sd3", "flux"):
        prompts = PromptEncoder(path, kind, teacher.sample_shape)(["a cat", "a dog"])
        return teacher, Conditions(2, lambda ids: prompts[ids])
    return teacher, Conditions.of(teacher)


UNET_KINDS = ["kdiffusion", "edm", "diffusers_ddpm", "stable_diffusion", "sdxl"]  # a bottleneck for the GAN head
TRANSFORMER_KINDS = ["dit", "sd3", "flux"]


@pytest.mark.parametrize(
    "kind, objective",
    [(kind, "sid") for kind in UNET_KINDS + TRANSFORMER_KINDS] + [(kind, "sida") for kind in UNET_KINDS],
)
def test_every_teacher_family_takes_every_objective(tmp_path, kind, objective):
    """Two steps of SiD (every family) and SiDA (those with a UNet bottleneck) on tiny real-class models: finite
    losses, and the generator and the fake denoiser both move (in step 1 the fake is the teacher: G's gradient is 0,
    so step 2 is G's first real step; no weight decay or EMA moves anything by itself)."""
    teacher, conditions = _family_teacher(kind, tmp_path / kind)
    teacher.requires_grad_(False)
    gan = dict(gan_generator_weight=0.01) if objective == "sida" else {}
    real = None
    if gan:
        count = 4
        images = torch.randn(count, *teacher.sample_shape)
        labels = torch.arange(count) % conditions.count if conditions is not None else None
        real = RealBatch(images, conditions.lookup(labels) if conditions is not None else None)
    params = DistillParams(
        objective=objective,
        steps=2,
        batch_size=2,
        lambda_reg=0.0,
        warmup_steps=0,
        weight_decay=0,
        ema_decay=None,
        **gan,
    )
    losses = []
    generator, fake = distill(
        teacher,
        params,
        tmp_path / "ck.pt",
        DistillInputs(conditions=conditions, real_images=real),
        on_step=lambda step, metrics, g: losses.append(metrics),
    )
    assert all(torch.isfinite(torch.tensor(value)) for step in losses for value in step.values()), losses
    assert {"loss_sid", "loss_fake"} <= set(losses[0]) and ("loss_gan_generator" in losses[0]) == bool(gan)
    moved = lambda module, prefix: any(  # noqa: E731
        not torch.equal(value, teacher.state_dict()[name.removeprefix(prefix)])
        for name, value in module.state_dict().items()
        if name.removeprefix(prefix) in teacher.state_dict()
    )
    assert moved(generator, "denoiser.") and moved(fake, "")
