"""Run by the tests under torchrun: DMD runs on the CPU (gloo), each
`strategy[-gan][-lora][-guided][-micro]:steps:kill_at` in turn (kill_at 0: never); every rank saves the run's
generator as rank<r>-<run name>-<steps>.pt."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from tiny_models import tiny_kdiffusion
from tiny_project import Killed, kill_at

from dmdlib.denoisers import GuidedDenoiser
from dmdlib.params import DistillParams
from dmdlib.training.distill import DistillInputs, Processes, distill
from dmdlib.training.dmd import RealBatch
from dmdlib.training.pairs import PairReader
from dmdlib.training.regression import l2_loss

PAIRS_META = {"teacher": "t", "sampler": "heun", "steps": 2, "guidance": 1.0, "shape": [1, 8, 8], "dtype": "float32"}


def tiny_teacher(label_dropout: float = 0.0):
    # the same teacher on every rank, and as the tests' one-process run
    return tiny_kdiffusion(label_dropout=label_dropout).requires_grad_(False)


def run_params(name: str, steps: int, processes: int) -> DistillParams:
    """The same global batch (4 samples, 4 pairs) whatever the process count; `name` is
    strategy[-gan][-lora][-guided][-micro] (micro: several processes accumulate micro-batches of one sample, the
    one-process run takes the whole batch at once)."""
    strategy, *extras = name.split("-")
    options = {"gan_generator_weight": 3e-3, "fake_steps": 2} if "gan" in extras else {}  # fresh samples for the 2nd
    options |= {"fake_lora_rank": 2, "generator_lora_rank": 2} if "lora" in extras else {}
    options |= {"guidance_range": (1.0, 2.0)} if "guided" in extras else {}
    options |= {"micro_batch_size": 1} if "micro" in extras and processes > 1 else {}
    return DistillParams(
        steps=steps,
        batch_size=4,
        reg_batch_size=4,
        warmup_steps=1,
        checkpoint_every=2,
        regression_loss="l2",
        regression_warmup_steps=1,
        data_parallel=strategy,
        **options,
    )


def run_setup(name: str, pairs: PairReader) -> tuple:
    """The teacher and the inputs of a run: pairs, 16 seeded random 'real' images with class labels (for the GAN
    head), and for a guided run a teacher serving "no class" and its classifier-free guided real denoiser."""
    teacher = tiny_teacher(0.1 if "guided" in name else 0.0)
    real_denoiser = GuidedDenoiser(teacher, teacher.uncond, 1.0) if "guided" in name else None
    images = torch.rand((16, *PAIRS_META["shape"]), generator=torch.Generator().manual_seed(1)) * 2 - 1
    return teacher, DistillInputs(pairs, l2_loss, real_denoiser, real_images=RealBatch(images, torch.arange(16) % 3))


if __name__ == "__main__":
    out, pairs = Path(sys.argv[1]), PairReader(sys.argv[2], PAIRS_META)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for run in sys.argv[3:]:
        name, steps, kill_step = run.split(":")

        try:
            teacher, inputs = run_setup(name, pairs)
            generator, _ = distill(
                teacher,
                run_params(name, int(steps), world),
                out / f"{name}.pt",
                inputs,
                processes=Processes(rank, world),
                on_step=kill_at(int(kill_step)),
            )
        except Killed:
            sys.exit(3)
        torch.save(generator.state_dict(), out / f"rank{rank}-{name}-{steps}.pt")
    dist.destroy_process_group()
