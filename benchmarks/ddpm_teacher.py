"""Train a diffusers DDPM teacher on the prepared data with the plain diffusers recipe, and save it.

    python benchmarks/ddpm_teacher.py OUT_FOLDER [--unconditional] [--betas linear|cosine] [--prediction epsilon|v]
                                      [--data data/prepared.parquet] [--steps 3000]

A `UNet2DModel` (class-conditional unless --unconditional), a `DDPMScheduler` with 1000 betas (linear, or the
improved-DDPM cosine schedule `squaredcos_cap_v2`), uniform timesteps and the MSE of the epsilon or velocity
target (as diffusers' `train_unconditional.py`), AdamW with warm-up, an EMA of the weights. The folder is written
with `save_pretrained` (`unet/`, `scheduler/`), the layout of `teacher.kind: diffusers_ddpm`, so the pipeline
distils it as it would a downloaded DDPM checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from dmdlib.data.images import to_model_range
from dmdlib.data.prepared import TRAIN, read_image_parquet

BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}


def unet(resolution: int, channels: int, classes: int) -> UNet2DModel:
    """About 1.5M parameters at 16x16: widths 32/64/64, two residual blocks per level, no attention."""
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=2,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=16,
        num_class_embeds=classes or None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (unet/ and scheduler/, diffusers layout)")
    parser.add_argument("--data", type=Path, default=Path("data/prepared.parquet"))
    parser.add_argument("--unconditional", action="store_true", help="no class labels, as google/ddpm-* checkpoints")
    parser.add_argument("--betas", choices=BETA_SCHEDULES, default="linear", help="the DDPMScheduler's beta schedule")
    parser.add_argument("--prediction", choices=PREDICTIONS, default="epsilon", help="what the network predicts")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = read_image_parquet(args.data)
    train = data.subset(TRAIN)
    images = to_model_range(data.images[train])
    conditional = bool(data.class_names) and not args.unconditional
    labels = torch.from_numpy(data.labels[train]).long() if conditional else None
    torch.manual_seed(args.seed)
    model = unet(data.resolution, data.channels, len(data.class_names) if conditional else 0)
    ema = copy.deepcopy(model).requires_grad_(False)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=BETA_SCHEDULES[args.betas], prediction_type=PREDICTIONS[args.prediction]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / args.warmup))
    rng = torch.Generator().manual_seed(args.seed)
    print(
        f"UNet2DModel ({'class-conditional' if conditional else 'unconditional'}, {args.betas} betas, "
        f"{args.prediction} "
        f"prediction): {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.steps} steps"
    )
    start = time.perf_counter()
    for _ in tqdm(range(args.steps), desc="ddpm teacher", mininterval=5):
        index = torch.randint(0, len(images), (args.batch_size,), generator=rng)
        x0, noise = images[index], torch.randn((args.batch_size, *images.shape[1:]), generator=rng)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,), generator=rng)
        prediction = model(
            scheduler.add_noise(x0, noise, t), t, class_labels=None if labels is None else labels[index]
        ).sample
        target = noise if args.prediction == "epsilon" else scheduler.get_velocity(x0, noise, t)
        loss = F.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - args.ema)
    DDPMPipeline(unet=ema.eval(), scheduler=scheduler).save_pretrained(args.out)
    print(f"wrote {args.out} after {time.perf_counter() - start:.0f} s; last loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
