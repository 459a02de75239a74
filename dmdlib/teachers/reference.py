"""The teacher folder (`teacher.json` and what it names) every stage after `teacher` reads: the frozen teacher, its
decoder, and its conditioning."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dmdlib.data.prepared import read_image_shape
from dmdlib.data.prompts import load_prompt_set
from dmdlib.denoisers import Denoiser, GuidedDenoiser
from dmdlib.denoisers.conditions import Conditions
from dmdlib.denoisers.flow_transformers import FluxDenoiser
from dmdlib.denoisers.guidance import EmbeddedGuidance
from dmdlib.errors import DataError, ParamsError, TeacherError
from dmdlib.teachers.families import family_of, load_teacher
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.latents import LatentDecoder, load_vae

REFERENCE_FILE = "teacher.json"


def read_teacher(folder: Path) -> tuple[Denoiser, TeacherReference]:
    """The frozen teacher written by the `teacher` stage, and its reference (paths resolved against `folder`)."""
    reference_file = folder / REFERENCE_FILE
    if not reference_file.is_file():
        raise TeacherError(
            f"{reference_file}: no teacher reference; run the `teacher` stage first (`dvc repro teacher`)"
        )
    reference = TeacherReference.model_validate(json.loads(reference_file.read_text())).with_paths_under(folder)
    return load_teacher(reference), reference


def is_latent(reference: TeacherReference) -> bool:
    """Whether the teacher works in a VAE's latent space (diffusers pipelines, EDM2 img512) rather than on pixels."""
    return family_of(reference.kind).latent or reference.encoder is not None


def image_decoder(reference: TeacherReference, vae_folder: str | None = None) -> LatentDecoder | None:
    """Latents -> images for a latent teacher (None for pixel-space ones): a diffusers pipeline's own VAE (decoded as
    its family decodes), or the VAE given for an EDM2 latent snapshot with its scale and bias; `vae_folder` swaps in
    another VAE (e.g. TAESD)."""
    family = family_of(reference.kind)
    if family.latent:
        vae = load_vae(vae_folder, subfolder="") if vae_folder else load_vae(reference.path)
        return (family.decoder or LatentDecoder.diffusers)(vae)
    if not is_latent(reference):
        return None
    encoder = reference.encoder
    return LatentDecoder(
        load_vae(vae_folder or reference.vae, subfolder=""), encoder["scale"], encoder["bias"], vae_range=(0.0, 1.0)
    )


def check_teacher_fits_data(teacher: Denoiser, reference: TeacherReference, folder: Path, data: Path) -> None:
    """Stop before any work when the teacher's images (decoded, for a latent teacher) and the prepared data differ
    in channels, size or class count, naming both."""
    if family_of(reference.kind).text:
        return  # text-to-image: evaluated on prompts, not on the prepared data
    (data_shape, data_classes), decoder = read_image_shape(data), image_decoder(reference)
    shape = teacher.sample_shape
    if decoder is not None:
        with torch.no_grad():
            shape = tuple(decoder(torch.zeros(1, *shape)).shape[1:])
    classes = teacher.num_classes
    if tuple(shape) != tuple(data_shape) or (classes and data_classes and classes != data_classes):
        describe = lambda s, k: (
            f"{'x'.join(map(str, s))} images ({k} classes)" if k else f"{'x'.join(map(str, s))} images"
        )  # noqa: E731
        raise DataError(
            f"teacher {folder} makes {describe(shape, classes)}, but {data} holds "
            f"{describe(data_shape, data_classes)}; "
            "prepare the data at the teacher's channels and resolution (prepare.channels, prepare.resolution) "
            "with its classes, or use a teacher trained on it"
        )


def conditioning(
    teacher: Denoiser,
    reference: TeacherReference,
    guidance: float,
    prompts_folder: Path,
    guidance_range: tuple[float, float] | None = None,
):
    """(real denoiser, Conditions or None, prompt texts or None) for a teacher.

    Text-to-image teachers draw `cond` from the cached training-prompt embeddings, others use their
    class labels. When guidance is not 1 (or a guidance-conditioned generator is trained), the real
    denoiser applies classifier-free guidance, with the negative prompt or the 'no class' label; FLUX.1-dev
    instead always takes the scale through its guidance embedding, in one pass.
    """
    if not family_of(reference.kind).text:
        conditions, texts, uncond = Conditions.of(teacher), None, teacher.uncond
    else:
        prompts, _ = load_prompt_set(prompts_folder)
        embeddings = prompts.train_embeddings
        conditions, texts, uncond = (
            Conditions(len(prompts.train), lambda ids: embeddings[ids]),
            prompts.train,
            prompts.uncond,
        )
    return guided(teacher, uncond, guidance, guidance_range), conditions, texts


def guided(teacher: Denoiser, uncond, guidance: float, guidance_range: tuple[float, float] | None = None) -> Denoiser:
    """The real denoiser at guidance scale `guidance`, guided as the teacher's own pipeline guides it."""
    if isinstance(teacher, FluxDenoiser) and teacher.guidance is not None:
        if guidance_range is not None:
            raise ParamsError(
                "distill.guidance_range: a FLUX teacher with a guidance embedding takes its scale as an input "
                "already; set pairs.guidance (the real denoiser's) and teacher.embedded_guidance instead"
            )
        return EmbeddedGuidance(teacher, guidance)
    if guidance == 1 and guidance_range is None:
        return teacher
    if uncond is None:
        raise ParamsError(
            "classifier-free guidance (pairs.guidance != 1 or distill.guidance_range) needs a teacher that serves "
            "'no condition': a text-to-image teacher, or the default teacher trained with "
            "teacher.train.label_dropout > 0"
        )
    return GuidedDenoiser(teacher, uncond, guidance)
