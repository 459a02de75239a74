"""The generator: a trainable copy of the teacher, evaluated once at its largest sigma (or K times on a ladder)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file, save_model
from torch import nn
from tqdm.auto import tqdm

from dmdlib.data.io import atomic_output
from dmdlib.denoisers.base import Denoiser, trainable_copy
from dmdlib.denoisers.guidance import GuidanceEmbedding
from dmdlib.errors import DataError
from dmdlib.generators.draws import Draws, as_draws
from dmdlib.teachers.families import family_of, load_teacher
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.loading import EDM_CONFIG_FILE, save_kdiffusion

# c_out of Stable Diffusion v1.5's epsilon UNet at its last timestep (sigma 14.61), where DMD2 starts its generator
MAX_START_OUTPUT_SCALE = 14.615


def start_sigma(denoiser: Denoiser) -> float:
    """Where a one-step generator starts: the teacher's sigma_max, unless its raw output enters D there with a scale
    c_out = loss_weight^-1/2 (EDM Table 1) above MAX_START_OUTPUT_SCALE; then the largest sigma of the teacher's
    grid where c_out is at most that (a grid point, so a stock diffusers scheduler can take the one step too).

    An epsilon teacher has c_out = sigma (x0 = x - sigma eps), so at a pixel DDPM's sigma_max of 157 its small
    epsilon error becomes speckle 157 times larger; EDM-preconditioned teachers (c_out <= sigma_data), SD v1.5 and
    flow teachers (c_out = t < 1) keep sigma_max.
    """
    grid = denoiser.sigma_grid().double()
    c_out = denoiser.loss_weight(grid) ** -0.5
    if c_out[-1] <= MAX_START_OUTPUT_SCALE:
        return denoiser.sigma_max
    return float(grid[c_out <= MAX_START_OUTPUT_SCALE].max())


class Generator(nn.Module):
    """G: a trainable copy of the teacher, run on a fixed descending sigma ladder.

    One step (the paper, section 3: G(z) = mu_base(z, T-1)) is `forward(z)` = D_G(sigma_0 z, sigma_0), sigma_0 the
    teacher's sigma_max unless its output is ill-conditioned there (`start_sigma`);
    K steps (DMD2 section 4.4) denoise at sigma_k and re-noise with fresh noise to sigma_{k+1}.
    For discrete-time teachers the noise is scaled by sqrt(sigma_0^2 + 1) instead, so z is exactly
    the x_T a diffusers pipeline starts from (`Denoiser.prior_scale`). With a `GuidanceEmbedding`,
    every call also takes the classifier-free guidance scale it should imitate.
    """

    def __init__(
        self, denoiser: Denoiser, sigmas: list[float] | None = None, guidance: GuidanceEmbedding | None = None
    ):
        super().__init__()
        self.denoiser = denoiser
        self.sigmas = [float(s) for s in (sigmas or [start_sigma(denoiser)])]
        if any(a <= b for a, b in zip(self.sigmas, self.sigmas[1:])) or self.sigmas[-1] <= 0:
            raise ValueError(f"generator sigmas {self.sigmas}: expected positive values in descending order")
        self.guidance = guidance
        if guidance is not None:
            guidance.attach(denoiser.time_embedding()[0])

    @classmethod
    def from_teacher(
        cls, teacher: Denoiser, sigmas: list[float] | None = None, guidance_range: tuple[float, float] | None = None
    ) -> "Generator":
        """Initialise from an independent trainable copy of the (unguided) teacher."""
        denoiser = trainable_copy(teacher)
        guidance = GuidanceEmbedding(*guidance_range, denoiser.time_embedding()[1]) if guidance_range else None
        return cls(denoiser, sigmas, guidance)

    @property
    def sigma(self) -> float:
        return self.sigmas[0]

    def denoise(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None, scale=None) -> torch.Tensor:
        """One generator evaluation at noise level sigma (and guidance scale, for a guidance-conditioned G)."""
        if self.guidance is None:
            if scale is not None:
                raise ValueError("this generator has no guidance input; train it with distill.guidance_range")
            return self.denoiser(x, sigma, cond)
        with self.guidance.at(self.guidance.low if scale is None else scale, x):
            return self.denoiser(x, sigma, cond)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None, scale=None) -> torch.Tensor:
        return self.denoise(z * self.denoiser.prior_scale(self.sigma), self.sigma, cond, scale)

    def noisy_input(
        self, z, cond=None, step: int = 0, scale=None, rng: Draws | torch.Generator | None = None
    ) -> torch.Tensor:
        """The input of ladder step `step` from noise z, made by the generator itself without gradients
        (DMD2's backward simulation): `step` evaluations, each re-noised with fresh noise."""
        x = z * self.denoiser.prior_scale(self.sigma)
        with torch.no_grad():
            for k in range(step):
                denoised = self.denoise(x, self.sigmas[k], cond, scale)
                x = denoised + self.sigmas[k + 1] * as_draws(rng).randn(x.shape).to(x)
        return x

    @torch.no_grad()
    def sample(
        self, z, cond=None, steps: int | None = None, scale=None, rng: Draws | torch.Generator | None = None
    ) -> torch.Tensor:
        """Samples with exactly `steps` evaluations (default: the whole ladder), on the ladder's first `steps`
        sigmas."""
        steps = len(self.sigmas) if steps is None else steps
        if not 1 <= steps <= len(self.sigmas):
            raise ValueError(f"steps must be between 1 and {len(self.sigmas)} (the generator's ladder), got {steps}")
        return self.denoise(self.noisy_input(z, cond, steps - 1, scale, rng), self.sigmas[steps - 1], cond, scale)


@torch.no_grad()
def generate(
    generator: Generator,
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    batch: int = 250,
    steps: int | None = None,
    scale: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """`steps` generator evaluations per sample (default: its whole ladder), in batches on the generator's device;
    re-noising seeded per batch; samples come back on the CPU (a progress bar with `progress`)."""
    device = next(generator.parameters()).device
    outputs = []
    starts = range(0, len(noise), batch)
    for start in tqdm(starts, desc="generator", unit="batch", leave=False, disable=not progress or len(starts) < 2):
        part = None if cond is None else cond[start : start + batch].to(device)
        rng = torch.Generator().manual_seed(start)
        outputs.append(generator.sample(noise[start : start + batch].to(device), part, steps, scale, rng).float().cpu())
    return torch.cat(outputs)


GENERATOR_FILE, WEIGHTS_FILE, GUIDANCE_FILE = "generator.json", "generator.safetensors", "guidance.safetensors"


def save_generator(
    folder: str | os.PathLike,
    generator: Generator,
    teacher_reference: TeacherReference | dict,
    teacher_digest: str | None = None,
) -> None:
    """Write a generator folder atomically: weights (safetensors) and generator.json to rebuild it, with the digest of
    the teacher it was distilled from (`teachers.teacher_digest`), which `check_generator_teacher` compares.

    A k-diffusion generator is self-contained (its config travels in the weights' metadata), so is an
    EDM/EDM2 one (weights under EDM's own state-dict names, with the network's JSON config); a diffusers
    pipeline's network is saved in diffusers layout (`unet/` or `transformer/`) with the scheduler config that
    takes the one step in that family's stock pipeline (its `one_step_scheduler`); other kinds rebuild the
    architecture from the teacher reference and load the weights.
    """
    with atomic_output(folder) as tmp:
        tmp.mkdir()
        description = {"sigmas": generator.sigmas, "teacher_digest": teacher_digest}
        teacher_reference = TeacherReference.of(teacher_reference)
        family = family_of(teacher_reference.kind)
        if family.kind == "kdiffusion":
            save_kdiffusion(tmp / WEIGHTS_FILE, generator.denoiser, generator.denoiser.config)
            description["teacher"] = {"kind": "kdiffusion", "path": WEIGHTS_FILE}
        elif family.snapshot:  # EDM, EDM2
            save_file(
                {name: t.detach().contiguous() for name, t in generator.denoiser.network.state_dict().items()},
                str(tmp / WEIGHTS_FILE),
            )
            shutil.copyfile(teacher_reference.config, tmp / EDM_CONFIG_FILE)
            description["teacher"] = {**teacher_reference.as_json(), "path": WEIGHTS_FILE, "config": EDM_CONFIG_FILE}
        elif family.network_folder:
            generator.denoiser.network.save_pretrained(tmp / family.network_folder)
            description.update(teacher=teacher_reference.as_json(), network=family.network_folder)
            if len(generator.sigmas) == 1 and generator.guidance is None:
                family.one_step_scheduler(generator.denoiser, generator.sigma).save_pretrained(tmp / "scheduler")
        else:
            save_model(generator.denoiser, str(tmp / WEIGHTS_FILE))
            description.update(teacher=teacher_reference.as_json(), weights=WEIGHTS_FILE)
        if generator.guidance is not None:
            save_model(generator.guidance, str(tmp / GUIDANCE_FILE))
            description["guidance"] = {
                "low": generator.guidance.low,
                "high": generator.guidance.high,
                "width": generator.guidance.width,
                "weights": GUIDANCE_FILE,
            }
        (tmp / GENERATOR_FILE).write_text(json.dumps(description, indent=2))


def check_generator_teacher(folder: str | os.PathLike, teacher_digest: str, teacher_folder: str | os.PathLike) -> None:
    """Stop when the generator in `folder` was distilled from another teacher than the one of `teacher_digest`."""
    description = _description(Path(folder))
    made_from = description.get("teacher_digest")
    if made_from != teacher_digest:
        which = f"teacher {made_from[:12]}" if made_from else "a teacher it does not record"
        raise DataError(
            f"{Path(folder) / GENERATOR_FILE}: distilled from {which}, not from {teacher_folder} "
            f"({teacher_digest[:12]}); re-run `distill` with this teacher (`dvc repro distill`)"
        )


def _description(folder: Path) -> dict:
    description_file = folder / GENERATOR_FILE
    if not description_file.is_file():
        raise DataError(
            f"{description_file}: not found; expected a generator folder written by the `distill` stage "
            "(`dvc repro distill`)"
        )
    try:
        return json.loads(description_file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{description_file}: not valid JSON ({err}); re-run `distill`") from None


def generator_reference(folder: str | os.PathLike) -> TeacherReference:
    """The teacher reference a generator folder rebuilds its network from (paths made whole): its kind, and for a
    diffusers pipeline the teacher's folder, whose VAE and text encoders the generator samples with."""
    return TeacherReference.model_validate(_description(Path(folder))["teacher"]).with_paths_under(folder)


def load_generator(folder: str | os.PathLike) -> Generator:
    """Load a distilled generator (frozen) from a folder written by `save_generator`.

    Example::

        generator = load_generator("models/generator")
        z = torch.randn(16, *generator.denoiser.sample_shape)
        images = generator(z, cond=torch.arange(16) % 10)  # class labels for a class-conditional teacher
        images = generator.sample(z, cond, steps=2)           # a K-step generator, 2 of its K steps
        images = generator(z, cond, scale=2.0)                # a guidance-conditioned generator at scale 2
    """
    folder = Path(folder)
    description, reference = _description(folder), generator_reference(folder)
    denoiser = load_teacher(reference)
    if "weights" in description:
        load_model(denoiser, str(folder / description["weights"]))
    if "network" in description:
        denoiser.network = type(denoiser.network).from_pretrained(
            folder / description["network"], local_files_only=True
        )
    guidance = None
    if "guidance" in description:
        spec = description["guidance"]
        guidance = GuidanceEmbedding(spec["low"], spec["high"], spec["width"])
        load_model(guidance, str(folder / spec["weights"]))
    return Generator(denoiser, description["sigmas"], guidance).eval().requires_grad_(False)
