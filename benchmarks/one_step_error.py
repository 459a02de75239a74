"""How well a teacher's own one-step prediction starts a generator, by the noise level it is taken at.

    python benchmarks/one_step_error.py TEACHER_FOLDER [--count 200] [--sigmas 157 80 40 14.6 5 2]

For noise z and the teacher's Heun-18 ODE output y from it (the regression target), the teacher's one-step
prediction at sigma is D(prior_scale(sigma) z, sigma). Prints, per sigma, its error against y (RMS over
pixels), c_out (the factor the raw network output enters D with: 1 / sqrt(loss_weight), EDM Table 1) and the
network-output error that error amounts to (RMS error / c_out): an epsilon teacher's x0 error is its epsilon
error times sigma. TEACHER_FOLDER is a `teacher` stage output (models/teacher) or a diffusers DDPM folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dmdlib.denoisers.sampling import heun_sample
from dmdlib.generators.seeds import seeded_inputs
from dmdlib.teachers.diffusers import load_diffusers_ddpm
from dmdlib.teachers.reference import REFERENCE_FILE, read_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[157.0, 80.0, 40.0, 14.6, 5.0, 2.0])
    args = parser.parse_args()
    teacher = (
        read_teacher(args.teacher)[0]
        if (args.teacher / REFERENCE_FILE).is_file()
        else load_diffusers_ddpm(args.teacher)
    )
    teacher = teacher.eval().requires_grad_(False)
    inputs = [seeded_inputs(3_000_000 + i, teacher.sample_shape, teacher.num_classes) for i in range(args.count)]
    z = torch.stack([noise for noise, _ in inputs])
    cond = torch.tensor([label for _, label in inputs]) if teacher.num_classes else None
    with torch.no_grad():
        target = heun_sample(teacher, z, 18, cond)
        print(
            f"{type(teacher).__name__}, sigma_max {teacher.sigma_max:.4g}; target RMS {target.pow(2).mean().sqrt():.3f}"
        )
        print("| sigma | one-step RMS error vs Heun-18 | c_out | network-output RMS error |\n|---|---|---|---|")
        for sigma in [s for s in args.sigmas if s <= teacher.sigma_max * 1.0001]:
            sigma = min(sigma, teacher.sigma_max)
            prediction = teacher(z * teacher.prior_scale(sigma), sigma, cond)
            error = float((prediction - target).pow(2).mean().sqrt())
            c_out = float(teacher.loss_weight(torch.tensor(sigma)) ** -0.5)
            print(f"| {sigma:.4g} | {error:.3f} | {c_out:.3g} | {error / c_out:.4f} |")


if __name__ == "__main__":
    main()
