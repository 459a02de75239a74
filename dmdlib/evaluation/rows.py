"""What the `evaluate` stage measures: the models (the teacher with the pairs' sampler, the generator where it started
and where it ended, its ladder and guidance scales), the reference set and noise floor they are measured against, and
their ratios to the teacher, raw and net of the floor."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from dmdlib.data.images import GRID_CLASSES, frames_of, to_model_range
from dmdlib.data.prepared import HELDOUT, TRAIN, stratified_subset
from dmdlib.denoisers.conditions import Conditions
from dmdlib.errors import ParamsError
from dmdlib.evaluation.measure import (
    INCEPTION_FILE,
    Measurement,
    ReferenceSet,
    classifier_extractor,
    count_evaluations,
    find_inception,
    inception_extractor,
    load_statistics,
    measure_model,
    rounded,
)
from dmdlib.evaluation.metrics import class_shares, paired_ratio
from dmdlib.generators.generator import Generator, generate
from dmdlib.generators.seeds import fixed_inputs, make_sampler, seeded_batch
from dmdlib.params import EvaluateParams
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.reference import guided, image_decoder

log = logging.getLogger(__name__)


def noise_floor(reference_set: ReferenceSet, dataset, count: int) -> dict:
    """The held-out images' metrics at the models' sample count (a seeded subset with the split's class shares), with
    each FID's standard error (the floor is one draw of real images: `ReferenceSet.fid_standard_errors`); omitted,
    saying why, when there are fewer of them."""
    heldout = dataset.subset(HELDOUT)
    if len(heldout) < count:
        reason = (
            f"the held-out split has {len(heldout)} images, fewer than evaluate.samples ({count}); a floor of "
            "another count would not compare (raise prepare.heldout_fraction or lower evaluate.samples)"
        )
        log.warning("no noise floor: %s", reason)
        return {"noise_floor": None, "noise_floor_omitted": reason}
    chosen = heldout[stratified_subset(dataset.labels[heldout], count)]
    images = frames_of(to_model_range(dataset.images[chosen]), dataset.frames)  # video data: whole clips' frames
    labels = np.repeat(dataset.labels[chosen], dataset.frames)
    return {
        "noise_floor": rounded({**reference_set.quality(images), **reference_set.fid_standard_errors(images, labels)})
    }


def reference_set(dataset, feature_net, config: EvaluateParams, device: torch.device) -> ReferenceSet:
    """The training split in each extractor's feature space: the classifier's, and Inception's when its weights are on
    disk; both networks run on `device`."""
    extractors = {"classifier": classifier_extractor(feature_net.to(device))}
    inception = find_inception(config.inception_path)
    if inception is not None:
        extractors["inception"] = inception_extractor(inception, device)
    else:
        log.info(
            "no Inception FID: put %s at evaluate.inception_path or /tmp/ (clean-fid's place) to add "
            "fid_inception; reporting fid_classifier only",
            INCEPTION_FILE,
        )
    statistics = None
    if config.inception_statistics:
        if inception is None:
            raise ParamsError(
                f"evaluate.inception_statistics needs Inception's weights ({INCEPTION_FILE}) at evaluate.inception_path"
            )
        statistics = {"inception": load_statistics(config.inception_statistics)}
    frames, dataset = dataset.frames, dataset.frame_view()  # video data: every frame of the training clips
    train = dataset.subset(TRAIN)
    shares = (
        class_shares(torch.from_numpy(dataset.labels[train]), len(dataset.class_names)) if dataset.class_names else None
    )
    return ReferenceSet.of(
        to_model_range(dataset.images[train]),
        dataset.labels[train],
        extractors,
        feature_net,
        shares,
        config.precision_recall_k,
        statistics,
        frames,
    )


def decoded(sample, decoder, batch: int):
    """A sampler whose latents come back as images, decoded in batches (speed figures include the decoding)."""
    return lambda z, y: torch.cat([decoder(part).cpu() for part in sample(z, y).split(batch)])


def models_to_measure(all_params, real_denoiser, distilled: Generator, device) -> dict:
    """name -> (sampler, NFE): the teacher with the pairs' sampler and guidance (the model that made the pairs and
    served as the real score), the initial and the distilled generator (and its ladder and guidance scales, when it
    has them)."""
    config, batch = all_params.evaluate, all_params.evaluate.batch_size
    shape, classes = real_denoiser.sample_shape, real_denoiser.num_classes
    probe = torch.zeros(1, *shape), (torch.zeros(1, dtype=torch.long) if classes else None)
    # the teacher at the distilled generator's first noise level: where distillation started (on the teacher's device)
    initial = Generator.from_teacher(real_denoiser, distilled.sigmas[:1]).eval().requires_grad_(False)

    def teacher_rows(scale: float):
        denoiser = guided(real_denoiser, real_denoiser.uncond, scale).to(device)
        sample = make_sampler(denoiser, all_params.pairs, Conditions.of(real_denoiser), device)

        def sample_all(z, y):
            bar = tqdm(
                total=len(z), desc=f"teacher (guidance {scale:g})", unit="image", disable=len(z) <= batch, mininterval=1
            )
            parts = []
            for i in range(0, len(z), batch):
                parts.append(sample(z[i : i + batch], None if y is None else y[i : i + batch]))
                bar.update(len(parts[-1]))
            bar.close()
            return torch.cat(parts)

        return (
            sample_all,
            count_evaluations(lambda: sample(*probe), real_denoiser, 1),
        )  # Heun: 2 * steps - 1; guided: twice that

    def generator_rows(generator: Generator, steps: int, scale: float | None = None):
        return lambda z, y: generate(generator, z, y, batch, steps, scale, progress=True), steps

    models = {
        "teacher": teacher_rows(all_params.pairs.guidance),
        "initial_one_step": generator_rows(initial, 1),
        "dmd_one_step": generator_rows(distilled, 1),
    }
    if len(distilled.sigmas) > 1:  # a few-step generator: also with its whole ladder (DMD2 section 4.4)
        models[f"dmd_{len(distilled.sigmas)}_step"] = generator_rows(distilled, len(distilled.sigmas))
    if distilled.guidance is not None:  # a guidance-conditioned generator: one model, several scales
        for scale in config.guidance_scales:
            name = f"{scale:g}".replace(".", "p")
            models[f"teacher_guidance_{name}"] = teacher_rows(scale)
            models[f"dmd_one_step_guidance_{name}"] = generator_rows(distilled, 1, scale)
    return models


def add_paired_ratios(results: dict, measured: dict[str, Measurement]) -> None:
    """Every model's FID net of the noise floor's (`_above_floor`: the floor is the finite-sample FID of real images,
    which every FID here carries), and each unguided generator's FID over the teacher's on the same sets, raw and net
    of the floor, with its standard error over the sets and, net of the floor, the floor's own (`metrics.paired_ratio`).
    """
    floor, teacher = results.get("noise_floor") or {}, measured["teacher"].set_fids
    for name, measurement in measured.items():
        row = results[name]
        for key, values in measurement.set_fids.items():
            if key in floor:
                row[f"{key}_above_floor"] = round(row[key] - floor[key], 4)
            if not name.startswith("dmd_") or "guidance" in name:
                continue
            ratios = {f"{key}_vs_teacher": paired_ratio(values, teacher[key])}
            if key in floor:
                ratios[f"{key}_above_floor_vs_teacher"] = paired_ratio(
                    values, teacher[key], floor[key], floor.get(f"{key}_se", 0.0)
                )
            for ratio_key, (mean, standard_error) in ratios.items():
                row[ratio_key], row[f"{ratio_key}_se"] = round(mean, 4), round(standard_error, 4)


def measure_all(
    all_params, real_denoiser, reference: TeacherReference, distilled: Generator, dataset, feature_net, device
) -> tuple:
    """(metrics, measurements) of every model of `models_to_measure` on the same seeded sample sets, with the noise
    floor and the paired ratios; a latent (EDM2) teacher's rows are measured on decoded images."""
    config = all_params.evaluate
    count, sets = config.samples or len(dataset.subset(HELDOUT)), config.sample_sets
    shape, classes = real_denoiser.sample_shape, real_denoiser.num_classes
    references = reference_set(dataset, feature_net, config, device)
    noise, labels = seeded_batch(config.first_seed, count * sets, shape, classes)
    per_class = 8 if dataset.frames == 1 else 2  # video: a row of frames per clip
    grid_inputs = fixed_inputs(shape, Conditions.of(real_denoiser), per_class * min(max(classes, 1), GRID_CLASSES))
    decoder = image_decoder(reference)  # a latent (EDM2) teacher: every row is measured on decoded images
    results: dict = {
        "samples": count,
        "sample_sets": sets,
        "reference": f"train split ({len(dataset.subset(TRAIN))} images; precision and recall: a seeded "
        f"subset of {count} with the split's class shares)"
        if dataset.frames == 1
        else f"train split ({len(dataset.subset(TRAIN))} clips of {dataset.frames} frames, measured frame by frame; "
        f"precision and recall: a seeded subset of as many frames with the split's class shares)",
        "feature_extractors": list(references.extractors),
        "device": _device_name(device),
        "machine_threads": torch.get_num_threads(),
        **noise_floor(references, dataset, count),
    }
    measured = {}
    models = models_to_measure(all_params, real_denoiser, distilled, device)
    for name, (sample, nfe) in models.items():
        sample = sample if decoder is None else decoded(sample, decoder.to(device), config.batch_size)
        if dataset.frames > 1:  # video data: measured frame by frame
            sample = functools.partial(_as_frames, sample, dataset.frames)
        log.info("evaluating %s on %d x %d samples", name, sets, count)
        measured[name] = measure_model(
            sample,
            nfe,
            noise,
            labels,
            sets,
            references,
            speed_batch=config.speed_batch_size,
            speed_repeats=config.speed_repeats,
            grid_inputs=grid_inputs,
        )
        results[name] = measured[name].row
    add_paired_ratios(results, measured)
    results["speedup_dmd_vs_teacher"] = round(
        results["dmd_one_step"]["images_per_s"] / results["teacher"]["images_per_s"], 2
    )
    return results, measured


def _as_frames(sample, frames: int, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    return frames_of(sample(noise, labels), frames)


def _device_name(device: torch.device) -> str:
    """What the speed figures were measured on: the GPU's name, or the CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
