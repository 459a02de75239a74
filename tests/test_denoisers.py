"""Every adapter agrees with a reference computed independently of it."""

import pytest
import torch
from tiny_models import tiny_unet2d, tiny_unet2d_condition
from torch import nn

from dmdlib.denoisers import (
    DDPMDenoiser,
    GaussianMixtureDenoiser,
    GuidedDenoiser,
    KarrasDenoiser,
    LatentDenoiser,
    frozen,
)
from dmdlib.denoisers.base import denoising_loss
from dmdlib.errors import TeacherError
from dmdlib.networks.karras_unet import ImageV1
from dmdlib.teachers.diffusers import load_diffusers_ddpm

torch.manual_seed(0)


class SigmaConv(nn.Module):
    """A tiny inner model whose output depends on both its input and sigma."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, sigma, class_cond=None):
        out = self.conv(x) * (1 + sigma.log()[:, None, None, None])
        if class_cond is not None:
            out = out + class_cond[:, None, None, None].float()
        return out


def test_karras_adapter_matches_edm_preconditioning():
    inner = SigmaConv()
    denoiser = KarrasDenoiser(inner, sigma_data=0.5, cond_key="class_cond")
    x = torch.randn(4, 3, 8, 8)
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0])
    labels = torch.tensor([0, 1, 2, 3])
    # EDM Table 1, written out here independently of k-diffusion.
    s, sd = sigma[:, None, None, None], 0.5
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()
    with torch.no_grad():
        expected = c_skip * x + c_out * inner(c_in * x, sigma, class_cond=labels)
        assert torch.allclose(denoiser(x, sigma, labels), expected, atol=1e-6)
        unconditional = c_skip * x + c_out * inner(c_in * x, sigma)
        assert torch.allclose(KarrasDenoiser(inner, 0.5)(x, sigma, labels), unconditional, atol=1e-6)


def test_karras_adapter_loss_is_kdiffusions_target_loss():
    """EDM's weighted denoising loss equals k-diffusion's 'karras' loss: ||F(c_in x) - (x0 - c_skip x) / c_out||^2."""
    inner = ImageV1(1, 16, [1, 1], [8, 16], [False, False])
    for param in inner.parameters():
        param.data.normal_(0, 0.05)  # the zero-initialised output layers too, so F is not 0
    denoiser = KarrasDenoiser(inner, sigma_data=0.5)
    x0, noise = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    s, sd = sigma[:, None, None, None], 0.5
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()
    with torch.no_grad():
        x = x0 + s * noise
        reference = ((inner(c_in * x, sigma) - (x0 - c_skip * x) / c_out) ** 2).flatten(1).mean(1).mean()
        ours = denoising_loss(denoiser, x0, sigma, noise)
    assert torch.allclose(ours, reference, rtol=1e-4)
    assert denoiser.sigma_grid()[0] == pytest.approx(0.002) and denoiser.sigma_grid()[-1] == pytest.approx(80.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_adapter_matches_scheduler_from_saved_folder(tmp_path, prediction_type):
    from diffusers import DDPMScheduler

    unet = tiny_unet2d()
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    unet.save_pretrained(tmp_path)  # files at the top, as google/ddpm-cifar10-32 is published
    scheduler.save_pretrained(tmp_path)
    denoiser = frozen(load_diffusers_ddpm(tmp_path))
    assert denoiser.prediction_type == prediction_type

    x0, noise = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([10, 500, 990])
    x_t = scheduler.add_noise(x0, noise, t)
    alpha_bar = scheduler.alphas_cumprod[t][:, None, None, None]
    with torch.no_grad():
        output = unet(x_t, t).sample
        if prediction_type == "epsilon":
            expected = (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
        else:
            expected = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * output
        sigma = ((1 - alpha_bar) / alpha_bar).sqrt().flatten()
        ours = denoiser(x_t / alpha_bar.sqrt(), sigma)  # the same point in sigma space: x = x_t / sqrt(a)
    assert torch.allclose(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_the_fake_denoisers_loss_is_the_teachers_own_mse(prediction_type, beta_schedule):
    """denoising_loss of a DDPM denoiser is the MSE of the raw output against the scheduler's own target at
    x_t = add_noise(x0, n, t): the noise, the velocity (`get_velocity`) or x0."""
    from diffusers import DDPMScheduler

    unet = tiny_unet2d()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=prediction_type)
    denoiser = DDPMDenoiser(unet, scheduler.alphas_cumprod, prediction_type)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([3, 200, 600, 990])
    sigma = denoiser.sigma_grid()[t]
    target = {"epsilon": noise, "v_prediction": scheduler.get_velocity(x0, noise, t), "sample": x0}[prediction_type]
    with torch.no_grad():
        mse = (unet(scheduler.add_noise(x0, noise, t), t).sample - target).pow(2).mean()
        ours = denoising_loss(denoiser, x0, sigma, noise)
    assert torch.allclose(ours, mse, rtol=1e-4)


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_discrete_prior_scale(beta_schedule):
    """DDPMPipeline and the one-step export's DDIM both call the network on latents = z at the first timestep; so
    the generator's prior_scale(sigma) z, divided by sqrt(sigma^2 + 1) on the way in, must give back z exactly."""
    from diffusers import DDPMScheduler

    from dmdlib.generators.generator import Generator, start_sigma

    inputs = []
    unet = tiny_unet2d()
    unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    alphas = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule).alphas_cumprod
    denoiser = DDPMDenoiser(unet, alphas, "epsilon")
    z = torch.randn(2, 3, 8, 8)
    for sigma in (denoiser.sigma_max, start_sigma(denoiser)):
        with torch.no_grad():
            Generator(denoiser, [sigma])(z)
        assert torch.allclose(inputs[-1], z, rtol=1e-6, atol=1e-6), sigma


def test_ddpm_pipeline_layout_and_bad_folders(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=tiny_unet2d(), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pipe")
    assert load_diffusers_ddpm(tmp_path / "pipe").sigma_grid().shape == (1000,)
    with pytest.raises(TeacherError, match="missing config.json.*download the weights beforehand"):
        load_diffusers_ddpm(tmp_path / "absent")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "scheduler_config.json").write_text("{}")
    with pytest.raises(TeacherError, match="broken: could not load"):
        load_diffusers_ddpm(broken)


def test_latent_adapter_with_classifier_free_guidance():
    from diffusers import PNDMScheduler

    unet = tiny_unet2d_condition()
    scheduler = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    denoiser = LatentDenoiser(unet, scheduler.alphas_cumprod, "epsilon")
    cond, uncond = torch.randn(2, 5, 12), torch.randn(1, 5, 12)
    scale = 3.0
    guided = GuidedDenoiser(denoiser, uncond, scale)

    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 800])
    x_t = scheduler.add_noise(x0, noise, t)
    alpha_bar = scheduler.alphas_cumprod[t][:, None, None, None]
    with torch.no_grad():
        eps_cond = unet(x_t, t, encoder_hidden_states=cond).sample
        eps_uncond = unet(x_t, t, encoder_hidden_states=uncond.expand(2, -1, -1)).sample
        eps = eps_uncond + scale * (eps_cond - eps_uncond)
        expected = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        sigma = ((1 - alpha_bar) / alpha_bar).sqrt().flatten()
        ours = guided(x_t / alpha_bar.sqrt(), sigma, cond)
        unguided = denoiser(x_t / alpha_bar.sqrt(), sigma, cond)
        per_sample = GuidedDenoiser(denoiser, uncond, torch.tensor([1.0, scale]))(x_t / alpha_bar.sqrt(), sigma, cond)
    assert torch.allclose(ours, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ours, unguided, atol=1e-3)
    assert torch.allclose(per_sample[0], unguided[0], atol=1e-5) and torch.allclose(per_sample[1], ours[1], atol=1e-5)
    with pytest.raises(ValueError, match="needs `cond`"):
        denoiser(x_t, sigma)


def test_gaussian_mixture_posterior_mean_and_score_are_exact():
    single = GaussianMixtureDenoiser(torch.tensor([[1.0, -2.0]]), torch.tensor(0.3))
    x, sigma = torch.randn(5, 2), torch.tensor(0.7)
    # One Gaussian: E[x0 | x] = mu + s^2 / (s^2 + sigma^2) (x - mu).
    expected = torch.tensor([1.0, -2.0]) + 0.09 / (0.09 + 0.49) * (x - torch.tensor([1.0, -2.0]))
    assert torch.allclose(single(x, sigma), expected, atol=1e-6)

    ring = GaussianMixtureDenoiser.ring(modes=8, radius=2.0, std=0.1)
    x = torch.randn(64, 2) * 2
    for sigma in (0.05, 0.5, 5.0):
        assert torch.allclose(ring.score(x, sigma), ring.exact_score(x, sigma), atol=1e-4, rtol=1e-4)
    # Against a finite difference of the log density.
    x0 = torch.tensor([[0.3, 1.1]], requires_grad=True)
    variance = 0.01 + 0.25
    log_density = torch.logsumexp(-((x0 - ring.means) ** 2).sum(1) / (2 * variance), dim=0)
    (autograd_score,) = torch.autograd.grad(log_density, x0)
    assert torch.allclose(ring.exact_score(x0.detach(), 0.5), autograd_score, atol=1e-5)
    samples = ring.sample(4000, generator=torch.Generator().manual_seed(0))
    assert samples.norm(dim=1).mean() == pytest.approx(2.0, abs=0.02)


def test_the_ode_ladder_is_edms_schedule():
    """EDM eq. 5: sigma_i = (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho, rho 7, then 0; from
    min(sigma_max, 80)."""
    from dmdlib.denoisers.sampling import karras_sigmas

    class Wide(nn.Module):
        sigma_min, sigma_max = 0.002, 157.0

    sigmas = karras_sigmas(Wide(), 18)
    top, bottom = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    expected = [(top + i / 17 * (bottom - top)) ** 7 for i in range(18)] + [0.0]
    assert torch.allclose(sigmas.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5)
