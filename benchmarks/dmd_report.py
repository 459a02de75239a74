"""One table of the embedded default's results, and the cost of one DMD step split into its network passes.

    python benchmarks/dmd_report.py [--metrics metrics/eval.json] [--teacher models/teacher] [--repeats 5 (0: no step
    split)]

The quality rows come from `metrics/eval.json` (made by `dvc repro`); the step split is measured now,
on this machine, with the batch sizes in params.yaml.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from experiments_table import spread  # a sibling script: benchmarks/ is on sys.path when run as a file

from dmdlib.denoisers import trainable_copy
from dmdlib.evaluation.measure import throughput
from dmdlib.generators.generator import Generator
from dmdlib.params import load_params
from dmdlib.teachers.reference import read_teacher
from dmdlib.training.dmd import GeneratorBatch, Pairs, Update, fake_denoiser_step, generator_step
from dmdlib.training.losses import sample_sigmas
from dmdlib.training.objectives import DistributionMatching, Regression
from dmdlib.training.regression import make_regression_loss


def median_seconds(function, repeats: int) -> float:
    """Seconds of the median call of `function`, after a warm-up call (the evaluate stage's own timer)."""
    return 1 / throughput(function, batch_size=1, repeats=repeats, min_seconds=0)


def quality_table(metrics: dict) -> None:
    teacher_speed = metrics["teacher"]["images_per_s"]
    extractor = metrics["feature_extractors"][0]
    fid = f"fid_{extractor}"
    print(
        f"\n{metrics.get('sample_sets', 1)} set(s) of {metrics['samples']} samples per row, mean ± standard error over "
        f"the sets (the noise floor: one set); FID/KID in the `{extractor}` feature space; precision and recall "
        "against a class-stratified subset of the training split as large as a set\n"
    )
    print(
        "| model | NFE | FID | FID - floor | FID / teacher's | (FID - floor) / (teacher's - floor) | KID | precision "
        "| recall | min class share ratio | images/s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("noise_floor", "teacher", "initial_one_step", "dmd_one_step"):
        row = metrics[name]
        if row is None:  # the noise floor, omitted when the held-out split is smaller than the sample count
            print(f"| {name} | omitted: {metrics.get('noise_floor_omitted', '')} |")
            continue
        speed = row.get("images_per_s")
        print(
            f"| {name} | {row.get('nfe', '-')} | {spread(row, fid)} | {spread(row, f'{fid}_above_floor')} | "
            f"{spread(row, f'{fid}_vs_teacher', 2)} | {spread(row, f'{fid}_above_floor_vs_teacher', 2)} | "
            f"{row[f'kid_{extractor}']:.4f} | {row['precision_classifier']:.3f} | {row['recall_classifier']:.3f} | "
            f"{row.get('min_class_share_ratio', '-')} | {f'{speed:,.1f}' if speed else '-'} | "
            f"{f'{speed / teacher_speed:.1f}x' if speed else '-'} |"
        )


def step_table(teacher_folder: Path, params_file: Path, repeats: int) -> None:
    params = load_params(params_file).distill
    teacher, _ = read_teacher(teacher_folder)
    generator = Generator.from_teacher(teacher)
    fake = trainable_copy(teacher)
    g_update = Update(torch.optim.AdamW(generator.parameters(), 1e-6))
    f_update = Update(torch.optim.AdamW(fake.parameters(), 1e-6))
    regression = make_regression_loss(params.regression_loss, params.lpips_net, params.lpips_fallback)
    shape, batch, reg_batch = teacher.sample_shape, params.batch_size, params.reg_batch_size
    rng = torch.Generator().manual_seed(0)
    labels = lambda n: torch.randint(0, teacher.num_classes, (n,), generator=rng) if teacher.num_classes else None
    z, cond = torch.randn(batch, *shape), labels(batch)
    pairs = Pairs(torch.randn(reg_batch, *shape), torch.randn(reg_batch, *shape), labels(reg_batch))
    sigma = sample_sigmas(teacher.sigma_grid(), batch, 0.02, 0.98, rng)
    noise = torch.randn(batch, *shape)
    x_detached = generator(z, cond).detach()

    def generator_pass():
        generator(torch.cat([z, pairs.noise]), None if cond is None else torch.cat([cond, pairs.cond])).sum().backward()

    passes = {
        "generator forward + backward (DM + pairs batch)": generator_pass,
        "real denoiser forward": lambda: torch.no_grad()(teacher)(
            x_detached + sigma[:, None, None, None] * noise, sigma, cond
        ),
        "fake denoiser forward": lambda: torch.no_grad()(fake)(
            x_detached + sigma[:, None, None, None] * noise, sigma, cond
        ),
        "fake denoiser update (forward, backward, AdamW)": lambda: fake_denoiser_step(
            fake, f_update, x_detached, cond, rng
        ),
        f"regression loss ({params.regression_loss}, forward + backward)": (
            lambda: regression(pairs.target.clone().requires_grad_(True), pairs.target.flip(0)).sum().backward()
        ),
    }
    timings = {name: median_seconds(fn, repeats) for name, fn in passes.items()}

    terms = {
        "dm": DistributionMatching(real_denoiser=teacher, fake_denoiser=fake),
        "reg": Regression(distance=regression, weight=params.lambda_reg),
    }

    def whole_step():
        result = generator_step(generator, g_update, GeneratorBatch(z, cond, pairs=pairs), rng, terms=terms)
        fake_denoiser_step(fake, f_update, result.x, cond, rng)

    total = median_seconds(whole_step, repeats)
    print(
        f"\nOne DMD step (batch {batch} + {reg_batch} pairs, {torch.get_num_threads()} threads), median of {repeats}\n"
    )
    print("| part | ms | share |\n|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / total:.0%} |")
    overhead = total - sum(timings.values())
    print(f"| overhead beyond these passes | {overhead * 1e3:.1f} | {overhead / total:.0%} |")
    print(f"| **whole step** | {total * 1e3:.1f} | 100% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per part of the step (0: quality table only)"
    )
    args = parser.parse_args()
    if args.metrics.is_file():
        quality_table(json.loads(args.metrics.read_text()))
    else:
        print(f"{args.metrics} not found: run `dvc repro` first for the quality rows")
    if args.repeats > 0:
        step_table(args.teacher, args.params, args.repeats)


if __name__ == "__main__":
    main()
