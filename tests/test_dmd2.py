"""DMD2's options on tiny models: GAN head, two time-scales, few-step generators, guidance-conditioned generators."""

import json

import pytest
import torch
from tiny_models import tiny_kdiffusion
from tiny_project import Killed, kill_at, run_stages, write_tiny_project

from dmdlib.denoisers import GuidedDenoiser, ScaleConditionedDenoiser, trainable_copy
from dmdlib.generators.generator import Generator, load_generator, save_generator
from dmdlib.params import DistillParams, ParamsError, load_params
from dmdlib.teachers.loading import UNCOND_CLASS
from dmdlib.training.distill import DistillInputs, distill
from dmdlib.training.dmd import (
    GAN,
    GeneratorBatch,
    RealBatch,
    Update,
    fake_denoiser_step,
    generator_step,
)
from dmdlib.training.gan import GANHead, denoise_with_logits
from dmdlib.training.objectives import Adversarial

SHAPE = (1, 8, 8)


def tiny_teacher(label_dropout: float = 0.1):
    teacher = tiny_kdiffusion(label_dropout=label_dropout)
    for parameter in teacher.parameters():  # k-diffusion starts the output and the noise/class modulation at zero
        if not parameter.any():
            torch.nn.init.normal_(parameter, std=0.1)
    return teacher.requires_grad_(False)


def params(**overrides):
    base = dict(steps=2, batch_size=2, reg_batch_size=0, lambda_reg=0.0, warmup_steps=1, checkpoint_every=1)
    return DistillParams(**{**base, **overrides})


def real_batch(count=6):
    rng = torch.Generator().manual_seed(1)
    return RealBatch(torch.rand((count, *SHAPE), generator=rng) * 2 - 1, torch.arange(count) % 3)


def count_evaluations(generator: Generator) -> list[int]:
    calls = []
    generator.denoiser.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_uncond_label():
    """Uncond label is a zero class vector and dropout teachers serve it."""
    teacher = tiny_teacher()
    assert teacher.uncond.tolist() == [UNCOND_CLASS] and tiny_teacher(0.0).uncond is None
    x, sigma = torch.randn(2, *SHAPE), torch.tensor([1.0, 5.0])
    one_hot = teacher.inner_model  # OneHotClasses around the image_v1 model
    uncond = one_hot(x, sigma, class_cond=torch.tensor([UNCOND_CLASS, UNCOND_CLASS]))
    assert torch.equal(uncond, one_hot.inner_model(x, sigma, mapping_cond=torch.zeros(2, 3)))
    assert not torch.allclose(uncond, one_hot(x, sigma, class_cond=torch.tensor([0, 0])))


def test_gan_head_gets_gradients_only_in_its_own_step():
    teacher = tiny_teacher()
    generator, fake = Generator.from_teacher(teacher), trainable_copy(teacher)
    head = GANHead(8)
    gan = GAN(head, generator_weight=1.0, head_weight=1.0)
    z, cond = torch.randn(2, *SHAPE), torch.tensor([0, 1])
    _, logits = denoise_with_logits(fake, head, torch.randn(3, *SHAPE), torch.full((3,), 2.0), torch.tensor([0, 1, 2]))
    assert logits.shape == (3,)

    before = [p.clone() for p in generator.parameters()]
    update = Update(torch.optim.SGD(generator.parameters(), lr=0.1))
    terms = {"gan_generator": Adversarial(fake_denoiser=fake, head=head)}
    result = generator_step(generator, update, GeneratorBatch(z, cond), torch.Generator().manual_seed(0), terms=terms)
    assert result.metrics["loss_gan_generator"] > 0
    assert all(p.grad is None for p in [*head.parameters(), *fake.parameters()])  # none in the generator's step
    assert all(p.requires_grad for p in [*head.parameters(), *fake.parameters()])  # and switched back on
    assert any(not torch.equal(a, b) for a, b in zip(before, generator.parameters()))  # G learned from the GAN alone

    generator_grads = [p.grad.clone() for p in generator.parameters()]
    fake_update = Update(torch.optim.SGD([*fake.parameters(), *head.parameters()], lr=0.1))
    gan.real_images = RealBatch(real_batch(2).images, torch.tensor([2, 0]))
    fake_loss, head_loss = fake_denoiser_step(
        fake, fake_update, result.x, cond, torch.Generator().manual_seed(1), gan=gan
    )
    assert fake_loss > 0 and head_loss > 0
    assert all(p.grad is not None for p in head.parameters()) and any(p.grad.abs().sum() > 0 for p in head.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(generator.parameters(), generator_grads))  # samples were detached


def test_gan_and_two_time_scales_resume(tmp_path):
    """Distill with gan and two time scales trains and resumes exactly."""
    options = dict(gan_generator_weight=0.1, dm_weight=1.0, fake_steps=2, steps=3, checkpoint_every=1)
    losses = []
    whole, _ = distill(
        tiny_teacher(),
        params(**options),
        tmp_path / "a.pt",
        DistillInputs(real_images=real_batch()),
        on_step=lambda step, metrics, generator: losses.append(metrics),
    )
    assert {"loss_gan_generator", "loss_gan_head", "loss_fake"} <= set(losses[0])
    assert all(m["loss_gan_head"] > 0 for m in losses)
    state = torch.load(tmp_path / "a.pt", weights_only=True)
    assert state["gan_head"]  # the head is checkpointed with the fake denoiser

    with pytest.raises(Killed):
        distill(
            tiny_teacher(),
            params(**options),
            tmp_path / "b.pt",
            DistillInputs(real_images=real_batch()),
            on_step=kill_at(2),
        )
    resumed, _ = distill(tiny_teacher(), params(**options), tmp_path / "b.pt", DistillInputs(real_images=real_batch()))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_fresh_fake_samples(tmp_path, monkeypatch):
    """DMD2's two time-scales: the fake denoiser's later updates of a step see new samples (new noise and labels), as
    DMD2 generates anew for every fake-score update, not the generator step's batch again."""
    import itertools

    import dmdlib.training.distill

    seen, loss_function = [], dmdlib.training.distill.fake_denoiser_loss

    def recording(fake, x, cond, rng=None, *, gan=None):
        seen.append((x.clone(), cond.clone()))
        return loss_function(fake, x, cond, rng, gan=gan)

    monkeypatch.setattr(dmdlib.training.distill, "fake_denoiser_loss", recording)
    distill(tiny_teacher(), params(dm_weight=1.0, fake_steps=3, batch_size=8), tmp_path / "ck.pt")
    assert len(seen) == 2 * 3
    for (x_a, _), (x_b, _) in itertools.combinations(seen, 2):
        assert not torch.allclose(x_a, x_b) and x_a.shape == x_b.shape == (8, *SHAPE)
    assert any(not torch.equal(cond_a, cond_b) for (_, cond_a), (_, cond_b) in zip(seen, seen[1:]))


def test_gan_start_step(tmp_path):
    """Gan start step delays the generators gan term but not the heads training."""
    losses = []
    options = params(gan_generator_weight=0.1, dm_weight=1.0, steps=3, gan_start_step=2)
    distill(
        tiny_teacher(),
        options,
        tmp_path / "ck.pt",
        DistillInputs(real_images=real_batch()),
        on_step=lambda step, metrics, generator: losses.append(metrics),
    )
    assert [m["loss_gan_generator"] > 0 for m in losses] == [False, False, True]
    assert all(m["loss_gan_head"] > 0 for m in losses)
    with pytest.raises(ValueError, match="gan_start_step"):
        params(gan_generator_weight=0.1, steps=3, gan_start_step=3)


def test_new_networks_seeded(tmp_path):
    """New networks start from distill seed not from the global rng."""
    fake_denoisers = []
    for global_seed in (1, 2):
        teacher = tiny_teacher()
        torch.manual_seed(global_seed)  # a fresh process starts the global RNG at a random seed
        options = params(gan_generator_weight=0.1, dm_weight=1.0, steps=1)
        _, fake = distill(teacher, options, tmp_path / f"{global_seed}.pt", DistillInputs(real_images=real_batch()))
        fake_denoisers.append(fake.state_dict())
    for name, value in fake_denoisers[0].items():  # the GAN head's first step reaches D_fake's weights
        assert torch.equal(value, fake_denoisers[1][name]), name


def test_gan_without_real_images_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="needs real images"):
        distill(tiny_teacher(), params(gan_generator_weight=0.1), tmp_path / "ck.pt")


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_k_step_sampling_uses_exactly_k_generator_evaluations(steps):
    generator = Generator.from_teacher(tiny_teacher(), [80.0, 5.0, 0.5])
    calls = count_evaluations(generator)
    images = generator.sample(
        torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 0]), steps, rng=torch.Generator().manual_seed(0)
    )
    assert len(calls) == steps and images.shape == (4, *SHAPE)


def test_ladder_first_step():
    """One step of a ladder is the plain generator and backward simulation has no gradient."""
    generator = Generator.from_teacher(tiny_teacher(), [80.0, 5.0, 0.5])
    z, cond = torch.randn(2, *SHAPE), torch.tensor([0, 1])
    assert torch.equal(generator.sample(z, cond, 1), generator(z, cond))
    calls = count_evaluations(generator)
    x = generator.noisy_input(z, cond, 2, rng=torch.Generator().manual_seed(0))
    assert len(calls) == 2 and not x.requires_grad
    denoised = generator.denoise(x, 0.5, cond)
    expected = generator.sample(z, cond, 3, rng=torch.Generator().manual_seed(0))
    assert torch.allclose(denoised, expected)  # sampling = backward simulation + one last evaluation
    with pytest.raises(ValueError, match="between 1 and 3"):
        generator.sample(z, cond, 4)


def test_few_step_distill(tmp_path):
    """Few step distill trains every ladder step and saves the ladder."""
    teacher = tiny_teacher()
    ladder = [80.0, 5.0, 0.5]
    generator, _ = distill(teacher, params(generator_sigmas=ladder, steps=6), tmp_path / "ck.pt")
    save_generator(tmp_path / "g", generator, {"kind": "kdiffusion"})
    loaded = load_generator(tmp_path / "g")
    assert loaded.sigmas == ladder
    z, cond = torch.randn(2, *SHAPE), torch.tensor([0, 1])
    assert torch.allclose(
        loaded.sample(z, cond, 3, rng=torch.Generator().manual_seed(0)),
        generator.sample(z, cond, 3, rng=torch.Generator().manual_seed(0)),
        atol=1e-6,
    )
    with pytest.raises(ParamsError, match="above the teacher's sigma_max"):
        distill(teacher, params(generator_sigmas=[100.0, 1.0]), tmp_path / "x.pt")


def test_guidance_input_starts_neutral_then_changes_the_output(tmp_path):
    teacher = tiny_teacher()
    generator = Generator.from_teacher(teacher, guidance_range=(1.0, 3.0))
    z, cond = torch.randn(2, *SHAPE), torch.tensor([0, 1])
    plain = Generator.from_teacher(teacher)(z, cond)
    assert torch.equal(generator(z, cond, 1.0), plain) and torch.equal(
        generator(z, cond, 3.0), plain
    )  # zero-initialised

    real = GuidedDenoiser(teacher, teacher.uncond, 1.0)
    trained, fake = distill(
        teacher,
        params(guidance_range=(1.0, 3.0), steps=3, generator_lr=1e-2, fake_lr=1e-2),
        tmp_path / "ck.pt",
        DistillInputs(real_denoiser=real),
    )
    low, high = trained(z, cond, 1.0), trained(z, cond, 3.0)
    assert not torch.allclose(low, high)  # one model, two scales, two outputs
    # the fake denoiser models G's samples at each scale, so it takes the scale as well
    assert isinstance(fake, ScaleConditionedDenoiser)
    fake.scale = 1.0
    fake_low = fake(z, 2.0, cond)
    fake.scale = 3.0
    assert not torch.allclose(fake_low, fake(z, 2.0, cond))
    per_sample = trained(z, cond, torch.tensor([1.0, 3.0]))
    assert torch.allclose(per_sample[0], low[0], atol=1e-6) and torch.allclose(per_sample[1], high[1], atol=1e-6)
    save_generator(tmp_path / "g", trained, {"kind": "kdiffusion"})
    loaded = load_generator(tmp_path / "g")
    assert torch.allclose(loaded(z, cond, 3.0), high, atol=1e-6)
    with pytest.raises(ValueError, match="no guidance input"):
        Generator.from_teacher(teacher)(z, cond, 2.0)


def test_guidance_range_needs_a_guided_real_denoiser(tmp_path):
    with pytest.raises(ParamsError, match="label_dropout"):
        distill(tiny_teacher(), params(guidance_range=(1.0, 3.0)), tmp_path / "ck.pt")


def test_bad_dmd2_params_name_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("distill:\n  generator_sigmas: [80, 100]\n")
    with pytest.raises(ParamsError, match="distill: `generator_sigmas` must be positive and strictly descending"):
        load_params(path)
    path.write_text("distill:\n  guidance_range: [3, 1]\n")
    with pytest.raises(ParamsError, match="`guidance_range` must be"):
        load_params(path)
    path.write_text("distill:\n  guidance_range: [1, 3]\n  gan_generator_weight: 0.1\n")
    with pytest.raises(ParamsError, match="cannot be combined"):
        load_params(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        "  gan_generator_weight: 0.01\n  generator_sigmas: [80, 2]\n  fake_steps: 2\n",
        "  guidance_range: [1, 2]\n",
    ],
)
def test_dmd2_options_through_the_stages(tmp_path, options):
    """Stage clis run the dmd2 options and evaluate reports each."""
    write_tiny_project(
        tmp_path,
        tiny_teacher(),
        (
            "features:\n  steps: 5\n  batch_size: 8\n"
            "pairs:\n  steps: 2\n"
            "distill:\n  steps: 2\n  batch_size: 2\n  lambda_reg: 0\n  sample_every: 2\n"
            + options
            + "evaluate:\n  samples: 12\n  speed_batch_size: 4\n  speed_repeats: 1\n  guidance_scales: [1, 1.5]\n"
        ),
    )
    run_stages(tmp_path, ["features", "teacher", "distill", "evaluate"])  # no pairs: lambda_reg is 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["dmd_one_step"]["nfe"] == 1
    live = tmp_path / "live" / "plots" / "metrics"
    if "gan" in options:
        assert metrics["dmd_2_step"]["nfe"] == 2
        assert (live / "loss_gan_generator.tsv").exists() and (live / "loss_gan_head.tsv").exists()
    else:
        for scale in ("1", "1p5"):
            assert metrics[f"dmd_one_step_guidance_{scale}"]["nfe"] == 1
            assert metrics[f"teacher_guidance_{scale}"]["nfe"] == 3 * (1 if scale == "1" else 2)


def test_a_copied_guidance_generator_uses_its_own_embedding():
    import copy

    generator = Generator.from_teacher(tiny_teacher(), guidance_range=(1.0, 3.0))
    ema = copy.deepcopy(generator)  # how distill makes the EMA
    torch.nn.init.normal_(ema.guidance.net[-1].weight)
    z, cond = torch.randn(2, *SHAPE), torch.tensor([0, 1])
    assert torch.equal(generator(z, cond, 3.0), generator(z, cond, 1.0))  # the original's embedding is still zero
    assert not torch.allclose(ema(z, cond, 3.0), generator(z, cond, 3.0))


def test_gan_losses_against_hand_computed_logits():
    """DMD2 eq. 5 with known logits: the generator wants its samples classed real, the head real as real and fake as
    fake (before, a flipped sign or swapped halves passed: the tests checked only that the losses were positive)."""
    import math

    from dmdlib.training.gan import generator_gan_loss, head_gan_loss

    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    assert float(generator_gan_loss(torch.tensor([2.0, -1.0]))) == pytest.approx((softplus(-2) + softplus(1)) / 2)
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([-2.0, 0.5])
    expected = (softplus(-3) + softplus(-1)) / 2 + (softplus(-2) + softplus(0.5)) / 2
    assert float(head_gan_loss(real, fake)) == pytest.approx(expected)


def test_the_fake_step_gives_the_head_its_real_and_fake_halves():
    """fake_denoiser_step's head loss is softplus(-logit) on the real images and softplus(logit) on the generated."""
    import torch.nn.functional as F

    teacher = tiny_teacher()
    fake, head = trainable_copy(teacher), GANHead(8)
    logits = []
    head.register_forward_hook(lambda _module, _args, output: logits.append(output.detach()))
    gan = GAN(head, 1.0, 1.0, RealBatch(real_batch(2).images + 0.5, torch.tensor([2, 0])))
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2))
    update = Update(torch.optim.SGD([*fake.parameters(), *head.parameters()], lr=0.0))
    _, head_loss = fake_denoiser_step(
        fake, update, x, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(1), gan=gan
    )
    (all_logits,) = logits
    generated, real = all_logits[:3], all_logits[3:]
    assert head_loss == pytest.approx(float(F.softplus(-real).mean() + F.softplus(generated).mean()), rel=1e-5)
    assert head_loss != pytest.approx(float(F.softplus(-generated).mean() + F.softplus(real).mean()), rel=1e-3)


def test_backward_simulation_renoises_to_the_next_sigma():
    """Ladder step k's input: G's own x0 at sigma_{k-1}, re-noised with fresh noise to sigma_k (DMD2 section 4.4)."""
    teacher = tiny_teacher()
    generator = Generator.from_teacher(teacher, [80.0, 10.0, 2.0])
    z, cond = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])
    x = generator.noisy_input(z, cond, 2, rng=torch.Generator().manual_seed(5))
    noise = torch.Generator().manual_seed(5)
    with torch.no_grad():
        first = generator.denoise(80.0 * z, 80.0, cond) + 10.0 * torch.randn(z.shape, generator=noise)
        expected = generator.denoise(first, 10.0, cond) + 2.0 * torch.randn(z.shape, generator=noise)
    assert torch.allclose(x, expected, atol=1e-5)
