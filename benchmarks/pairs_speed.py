"""Pairs throughput against the teacher's raw speed: pairs/s, denoiser evaluations/s, and the ratio to 1/NFE.

    python benchmarks/pairs_speed.py [--teacher models/teacher] [--batch 100] [--steps 18]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dmdlib.pairs import seeded_inputs
from dmdlib.sampling import heun_sample
from stages.teacher_reference import read_teacher


def timed(function, repeats: int) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    teacher, reference = read_teacher(args.teacher)
    inputs = [seeded_inputs(seed, teacher.sample_shape, teacher.num_classes) for seed in range(args.batch)]
    noise = torch.stack([z for z, _ in inputs])
    labels = torch.tensor([label for _, label in inputs]) if teacher.num_classes else None
    nfe = 2 * args.steps - 1
    sigma = torch.full((args.batch,), 1.0)
    with torch.no_grad():
        evaluation = timed(lambda: teacher(noise, sigma, labels), args.repeats * 10)
        sampling = timed(lambda: heun_sample(teacher, noise, args.steps, labels), args.repeats)
    evals_per_s = args.batch / evaluation
    pairs_per_s = args.batch / sampling
    ideal = evals_per_s / nfe
    print(f"teacher {reference['kind']} {tuple(teacher.sample_shape)}, batch {args.batch}, "
          f"Heun {args.steps} steps ({nfe} NFE), {torch.get_num_threads()} threads")
    print("| measure | value |\n|---|---|")
    print(f"| denoiser evaluations/s (per image) | {evals_per_s:,.0f} |")
    print(f"| ideal pairs/s (evaluations/s / NFE) | {ideal:,.1f} |")
    print(f"| measured pairs/s | {pairs_per_s:,.1f} |")
    print(f"| measured / ideal | {pairs_per_s / ideal:.2f} |")


if __name__ == "__main__":
    main()
