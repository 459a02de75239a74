"""`evaluate` stage: FID/KID, precision/recall, class shares and speed of the teacher, the initial and the
distilled one-step generator, and the data's own noise floor; metrics JSON for `dvc metrics diff`, and pictures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import typer

from dmdlib.classifier import load_classifier, predict
from dmdlib.data import HELDOUT, TRAIN, read_image_parquet
from dmdlib.denoisers import GuidedDenoiser
from dmdlib.distill import Conditions
from dmdlib.evaluation import (
    classifier_extractor,
    extract_features,
    find_inception,
    inception_extractor,
    peak_tensor_memory_mib,
    throughput,
)
from dmdlib.generator import Generator, load_generator
from dmdlib.images import make_grid, save_grid, to_model_range, to_uint8
from dmdlib.io import atomic_output
from dmdlib.metrics import class_shares, fid, kid, mean_over_sets, paired_ratio, precision_recall
from dmdlib.pairs import seeded_inputs
from dmdlib.params import load_params
from stages.common import PARAMS_OPTION, PROMPTS_OPTION, TEACHER_OPTION, compute_device, read_teacher, setup_logging, user_errors
from stages.distill import fixed_inputs, generate
from stages.evaluate_text import evaluate_text_to_image
from stages.pairs import make_sampler

log = logging.getLogger("evaluate")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    data: Path = typer.Option(Path("data/prepared.parquet"), help="Prepared data: reference (train) and noise floor (held-out)."),
    teacher: Path = TEACHER_OPTION,
    generator: Path = typer.Option(Path("models/generator"), help="Generator folder from the `distill` stage."),
    classifier: Path = typer.Option(Path("models/classifier.safetensors"), help="Offline feature network (`features` stage)."),
    metrics: Path = typer.Option(Path("metrics/eval.json"), help="Metrics JSON (declared as DVC metrics)."),
    images: Path = typer.Option(Path("reports/eval"), help="Folder for sample grids and the side-by-side comparison."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Measure every model on the same seeds and sample counts; write metrics/eval.json and grids."""
    setup_logging()
    with user_errors():
        all_params = load_params(params)
        config = all_params.evaluate
        real_denoiser, reference = read_teacher(teacher)
        device = compute_device()
        real_denoiser = real_denoiser.to(device)
        if reference["kind"] == "stable_diffusion":
            results = evaluate_text_to_image(all_params, real_denoiser, reference, generator, prompts, images)
            _write(metrics, results)
            return
        dataset = read_image_parquet(data)
        real = to_model_range(dataset.images[dataset.subset(TRAIN)])
        heldout = to_model_range(dataset.images[dataset.subset(HELDOUT)])
        count = config.samples or len(heldout)
        distilled = load_generator(generator).to(device)
        feature_net = load_classifier(classifier)
        shape, classes = real_denoiser.sample_shape, real_denoiser.num_classes

        extractors = {"classifier": classifier_extractor(feature_net)}
        inception = find_inception(config.inception_path)
        if inception is not None:
            extractors["inception"] = inception_extractor(inception, torch.device("cpu"))
        else:
            log.info("no Inception FID: put %s at evaluate.inception_path or /tmp/ (clean-fid's place) to add "
                     "fid_inception; reporting fid_classifier only", "inception-2015-12-05.pt")

        sets = config.sample_sets
        inputs = [seeded_inputs(config.first_seed + i, shape, classes) for i in range(count * sets)]
        noise = torch.stack([z for z, _ in inputs])
        labels = torch.tensor([label for _, label in inputs]) if classes else None
        teacher_nfe = 2 * all_params.pairs.steps - 1 if all_params.pairs.sampler == "heun" else None
        initial = Generator.from_teacher(real_denoiser).eval().requires_grad_(False)  # on the teacher's device

        def teacher_rows(scale: float = 1.0):
            denoiser = real_denoiser if scale == 1 else GuidedDenoiser(real_denoiser, real_denoiser.uncond, scale).to(device)
            sample = make_sampler(denoiser, all_params.pairs, Conditions.of(real_denoiser), device)
            return (lambda z, y: torch.cat([sample(z[i : i + config.batch_size], None if y is None else y[i : i + config.batch_size])
                                            for i in range(0, len(z), config.batch_size)]),
                    teacher_nfe if scale == 1 or teacher_nfe is None else 2 * teacher_nfe)

        def generator_rows(steps: int, scale: float | None = None):
            return lambda z, y: generate(distilled, z, y, config.batch_size, steps, scale), steps

        models = {
            "teacher": teacher_rows(),
            "initial_one_step": (lambda z, y: generate(initial, z, y, config.batch_size), 1),
            "dmd_one_step": generator_rows(1),
        }
        if len(distilled.sigmas) > 1:  # a few-step generator: also with its whole ladder (DMD2 section 4.4)
            models[f"dmd_{len(distilled.sigmas)}_step"] = generator_rows(len(distilled.sigmas))
        if distilled.guidance is not None:  # a guidance-conditioned generator: one model, several scales
            for scale in config.guidance_scales:
                name = f"{scale:g}".replace(".", "p")
                models[f"teacher_guidance_{name}"] = teacher_rows(scale)
                models[f"dmd_one_step_guidance_{name}"] = generator_rows(1, scale)
        real_features = {name: extract_features(fn, real) for name, fn in extractors.items()}
        data_shares = class_shares(torch.from_numpy(dataset.labels[dataset.subset(TRAIN)]), len(dataset.class_names))
        results: dict = {"samples": count, "sample_sets": sets, "reference": f"train split ({len(real)} images)",
                         "feature_extractors": list(extractors), "device": _device_name(device),
                         "machine_threads": torch.get_num_threads()}

        def quality(samples: torch.Tensor) -> dict:
            row = {}
            for name, extract in extractors.items():
                features = extract_features(extract, samples)
                row[f"fid_{name}"] = fid(real_features[name], features)
                row[f"kid_{name}"] = kid(real_features[name], features)
            precision, recall = precision_recall(real_features["classifier"][:count], extract_features(extractors["classifier"], samples), config.precision_recall_k)
            row["precision_classifier"], row["recall_classifier"] = precision, recall
            if dataset.class_names:
                shares = class_shares(predict(feature_net, samples), len(dataset.class_names))
                row["min_class_share_ratio"] = float((shares / data_shares).min())
            return row

        results["noise_floor"] = _rounded(quality(heldout[:count]))
        grid_noise, grid_labels = fixed_inputs(shape, Conditions.of(real_denoiser), 8 * max(classes, 1))
        grids, set_fids = {}, {}
        for name, (sample, nfe) in models.items():
            log.info("evaluating %s on %d x %d samples", name, sets, count)
            samples = sample(noise, labels)
            set_rows = [quality(samples[k * count : (k + 1) * count]) for k in range(sets)]
            set_fids[name] = {key: [r[key] for r in set_rows] for key in set_rows[0] if key.startswith("fid_")}
            row = _rounded(mean_over_sets(set_rows))
            speed_noise = noise[: config.speed_batch_size]
            speed_labels = None if labels is None else labels[: config.speed_batch_size]
            run = lambda: sample(speed_noise, speed_labels)
            row["images_per_s"] = round(throughput(run, len(speed_noise), config.speed_repeats), 2)
            row["peak_memory_mib"], row["nfe"] = round(peak_tensor_memory_mib(run), 1), nfe
            results[name] = row
            grids[name] = to_uint8(sample(grid_noise, grid_labels))
            save_grid(images / f"{name}.png", grids[name], columns=8, scale=4)
        for name in models:
            if name.startswith("dmd_") and "guidance" not in name:  # unguided generators, paired with the teacher per set
                for key, values in set_fids[name].items():
                    mean, std = paired_ratio(values, set_fids["teacher"][key])
                    results[name][f"{key}_vs_teacher"], results[name][f"{key}_vs_teacher_std"] = round(mean, 4), round(std, 4)
        results["speedup_dmd_vs_teacher"] = round(results["dmd_one_step"]["images_per_s"] / results["teacher"]["images_per_s"], 2)
        _save_comparison(images / "comparison.png", {name: grid for name, grid in grids.items() if "guidance" not in name})
        _write(metrics, results)


def _rounded(row: dict[str, float]) -> dict[str, float]:
    """Metrics at the precision metrics/eval.json keeps (KID is small: six places)."""
    return {key: round(value, 6 if key.startswith("kid_") else 4) for key, value in row.items()}


def _device_name(device: torch.device) -> str:
    """What the speed figures were measured on: the GPU's name, or the CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _write(metrics: Path, results: dict) -> None:
    with atomic_output(metrics) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    log.info("wrote %s:\n%s", metrics, json.dumps(results, indent=2))


def _save_comparison(path: Path, grids: dict[str, np.ndarray]) -> None:
    """Teacher | initial | distilled, side by side, the same noise in the same place."""
    panels = [make_grid(grid, columns=8, padding=1) for grid in grids.values()]
    gap = np.full((panels[0].shape[0], 6, panels[0].shape[2]), 255, np.uint8)
    picture = np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)
    save_grid(path, picture[None], columns=1, scale=4)


if __name__ == "__main__":
    app()
