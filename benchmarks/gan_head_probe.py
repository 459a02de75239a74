"""Where the GAN head can tell real from generated: its logits and ROC AUC at each noise level, from a distill checkpoint.

    python benchmarks/gan_head_probe.py CHECKPOINT --params PARAMS [--teacher models/teacher]
        [--data data/prepared.parquet] [--count 512]

The head judges the checkpoint's generator (not its EMA: the head was trained against those samples)
on held-out digits, each batch noised at one sigma. AUC 0.5: it cannot tell them apart at that
sigma; near 1: the generator's GAN gradient there comes mostly from whatever gives them away.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dmdlib.conditions import Conditions
from dmdlib.data import read_image_parquet
from dmdlib.denoisers import trainable_copy
from dmdlib.distill import make_gan_head
from dmdlib.gan import denoise_with_logits
from dmdlib.generator import Generator
from dmdlib.images import to_model_range
from dmdlib.params import load_params
from stages.teacher_reference import read_teacher

SIGMAS = [0.002, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 80.0]


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a real logit > a generated logit), ties counted half: the ROC AUC."""
    greater = (positive[:, None] > negative[None, :]).float().mean()
    return float(greater + 0.5 * (positive[:, None] == negative[None, :]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="distill checkpoint of a run with gan_generator_weight > 0")
    parser.add_argument("--params", type=Path, required=True, help="the params file that run used (for its sigma ladder)")
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared.parquet"))
    parser.add_argument("--count", type=int, default=512, help="real and generated images per noise level")
    args = parser.parse_args()

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    if not state.get("gan_head"):
        raise SystemExit(f"{args.checkpoint}: no GAN head in this checkpoint (a run with distill.gan_generator_weight 0)")
    config = load_params(args.params).distill
    teacher, _ = read_teacher(args.teacher)
    conditions = Conditions.of(teacher)
    fake_denoiser = trainable_copy(teacher)
    fake_denoiser.load_state_dict(state["fake_denoiser"])
    head = make_gan_head(fake_denoiser, conditions, "cpu")
    head.load_state_dict(state["gan_head"])
    generator = Generator.from_teacher(teacher, config.generator_sigmas)
    generator.load_state_dict(state["generator"])

    data = read_image_parquet(args.data)
    heldout = data.subset("heldout")[: args.count]
    real = to_model_range(data.images[heldout])
    real_cond = torch.from_numpy(data.labels[heldout]).long() if conditions else None
    rng = torch.Generator().manual_seed(0)
    z = torch.randn((len(real), *teacher.sample_shape), generator=rng)
    cond = torch.randint(0, conditions.count, (len(real),), generator=rng) if conditions else None
    print(f"step {state['step']}, {len(real)} held-out and {len(real)} generated images ({len(generator.sigmas)}-step sampling)")
    print("| sigma | real logit | generated logit | AUC |\n|---|---|---|---|")
    with torch.no_grad():
        generated = generator.sample(z, cond, rng=rng)
        for sigma in SIGMAS:
            sigmas = torch.full((len(real),), sigma)
            noisy_real = real + sigma * torch.randn(real.shape, generator=rng)
            noisy_generated = generated + sigma * torch.randn(real.shape, generator=rng)
            _, real_logits = denoise_with_logits(fake_denoiser, head, noisy_real, sigmas, real_cond)
            _, fake_logits = denoise_with_logits(fake_denoiser, head, noisy_generated, sigmas, cond)
            print(f"| {sigma:g} | {real_logits.mean():+.3f} | {fake_logits.mean():+.3f} | {auc(real_logits, fake_logits):.3f} |")


if __name__ == "__main__":
    main()
