"""Run by the tests under torchrun: a few data-parallel DMD steps on CPU (gloo); each rank saves its generator."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dmdlib.distill import Processes, distill
from dmdlib.params import DistillParams
from dmdlib.teachers import build_kdiffusion, kdiffusion_config

if __name__ == "__main__":
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same teacher on every rank
    teacher = build_kdiffusion(kdiffusion_config(1, 8, [8, 8], [1, 1], 16, 3, 0.5, 0.002, 80.0)).requires_grad_(False)
    params = DistillParams(steps=3, batch_size=2, reg_batch_size=0, lambda_reg=0.0, warmup_steps=1, checkpoint_every=10)
    generator, _ = distill(teacher, params, out / "ck.pt", processes=Processes(rank, world))
    torch.save(generator.state_dict(), out / f"rank{rank}.pt")
    dist.destroy_process_group()
