"""The text-to-image half of `evaluate`: CLIP score, FID against a reference folder, and speed, on evaluation
prompts."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from dmdlib.data.images import save_grid, to_model_range, to_uint8
from dmdlib.data.prepared import load_image_folder
from dmdlib.data.prompts import load_prompt_set
from dmdlib.denoisers.conditions import Conditions
from dmdlib.errors import ParamsError
from dmdlib.evaluation.measure import (
    count_evaluations,
    extract_features,
    find_inception,
    inception_extractor,
    peak_tensor_memory_mib,
    throughput,
)
from dmdlib.evaluation.metrics import clip_score, fid, kid
from dmdlib.generators.generator import generate, load_generator
from dmdlib.generators.seeds import make_sampler, seeded_inputs
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.reference import guided, image_decoder

log = logging.getLogger("evaluate")


def evaluate_text_to_image(
    all_params,
    teacher_denoiser,
    reference: TeacherReference,
    generator_folder: Path,
    prompts_folder: Path,
    images: Path,
) -> dict:
    """Metrics of the guided teacher (pairs sampler) and the one-step generator on the evaluation prompts."""
    config, pairs = all_params.evaluate, all_params.pairs
    if config.sample_sets != 1:
        raise ParamsError(
            f"evaluate.sample_sets is {config.sample_sets}, but text-to-image evaluation takes one set "
            "(the evaluation prompts); set it to 1 and raise evaluate.samples instead"
        )
    prompts, _ = load_prompt_set(prompts_folder)
    count = config.samples or len(prompts.eval)
    texts = [prompts.eval[i % len(prompts.eval)] for i in range(count)]
    cond = prompts.eval_embeddings[torch.arange(count) % len(prompts.eval)]
    noise = torch.stack(
        [seeded_inputs(config.first_seed + i, teacher_denoiser.sample_shape, 0)[0] for i in range(count)]
    )
    device = next(teacher_denoiser.parameters()).device
    decoder = image_decoder(reference).to(device)
    real = guided(teacher_denoiser, prompts.uncond, pairs.guidance)
    teacher_sample = make_sampler(real.to(device), pairs, Conditions(count, lambda ids: cond[ids]), device)
    generator = load_generator(generator_folder).to(device)
    batch = config.batch_size

    def teacher_images(z, ids):
        return torch.cat(
            [decoder(teacher_sample(z[i : i + batch], ids[i : i + batch])).cpu() for i in range(0, len(z), batch)]
        )

    def generator_images(z, ids):
        return torch.cat(
            [
                decoder(generate(generator, z[i : i + batch], cond[ids[i : i + batch]])).cpu()
                for i in range(0, len(z), batch)
            ]
        )

    clip = None
    if config.clip_model:
        from transformers import CLIPModel, CLIPProcessor

        folder = Path(config.clip_model).expanduser()
        clip = (
            CLIPModel.from_pretrained(folder, local_files_only=True).eval(),
            CLIPProcessor.from_pretrained(folder, local_files_only=True),
        )
    else:
        log.info("no CLIP score: set evaluate.clip_model to a local CLIPModel folder to add it")
    inception = find_inception(config.inception_path)
    reference_features = None
    if config.reference_images and inception is not None:
        extract = inception_extractor(inception, device)
        real_images = load_image_folder(Path(config.reference_images).expanduser(), 299, 3).images
        reference_features = extract_features(extract, to_model_range(real_images), batch)
    else:
        log.info(
            "no FID: needs evaluate.reference_images (a folder of real images) and the Inception weights "
            "(evaluate.inception_path); omitted rather than estimated"
        )

    results: dict = {"samples": count, "prompts": "evaluation split"}
    ids = torch.arange(count)
    probe = noise[:1], ids[:1]
    teacher_nfe = count_evaluations(lambda: teacher_sample(*probe), teacher_denoiser, 1)
    for name, sample, nfe in [("teacher", teacher_images, teacher_nfe), ("dmd_one_step", generator_images, 1)]:
        log.info("evaluating %s on %d prompts", name, count)
        pictures = sample(noise, ids)
        frames = len(pictures) // count  # a video teacher's clips come as their frames, one after another
        row: dict = {"nfe": nfe}
        if clip is not None:  # video: every frame against its clip's prompt
            row["clip_score"] = round(clip_score(*clip, pictures, [text for text in texts for _ in range(frames)]), 4)
        if reference_features is not None:
            features = extract_features(extract, pictures, batch)
            row["fid_inception"] = round(fid(reference_features, features), 4)
            row["kid_inception"] = round(kid(reference_features, features), 6)
        speed_ids = ids[: config.speed_batch_size]
        run = functools.partial(sample, noise[speed_ids], speed_ids)
        row["images_per_s"] = round(throughput(run, len(speed_ids), config.speed_repeats), 3)
        row["peak_memory_mib"] = round(peak_tensor_memory_mib(run), 1)
        results[name] = row
        shown, columns = (pictures[:64], 8) if frames == 1 else (pictures[: 16 * frames], frames)  # a row per clip
        save_grid(images / f"{name}.png", to_uint8(shown), columns=columns, scale=4)
    results["speedup_dmd_vs_teacher"] = round(
        results["dmd_one_step"]["images_per_s"] / results["teacher"]["images_per_s"], 2
    )
    return results
