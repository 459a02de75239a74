"""Run by the tests under torchrun: DMD runs on the CPU (gloo), each `strategy:steps:kill_at` in turn (kill_at 0:
never); rank 0 saves each run's generator as <strategy>-<steps>.pt, every rank as rank<r>-<strategy>-<steps>.pt."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dmdlib.distill import DistillInputs, Processes, distill
from dmdlib.pairs import PairReader
from dmdlib.params import DistillParams
from dmdlib.regression import l2_loss
from dmdlib.teachers import build_kdiffusion, kdiffusion_config

PAIRS_META = {"teacher": "t", "sampler": "heun", "steps": 2, "guidance": 1.0, "shape": [1, 8, 8], "dtype": "float32"}


def tiny_teacher():
    torch.manual_seed(0)  # the same teacher on every rank, and as the tests' one-process run
    return build_kdiffusion(kdiffusion_config(1, 8, [8, 8], [1, 1], 16, 3, 0.5, 0.002, 80.0)).requires_grad_(False)


def run_params(strategy: str, steps: int, processes: int) -> DistillParams:
    """The same global batch (4 samples, 4 pairs) whatever the process count."""
    return DistillParams(steps=steps, batch_size=4 // processes, reg_batch_size=4 // processes, warmup_steps=1,
                         checkpoint_every=2, regression_loss="l2", regression_warmup_steps=1, data_parallel=strategy)


class Killed(Exception):
    pass


if __name__ == "__main__":
    out, pairs = Path(sys.argv[1]), PairReader(sys.argv[2], PAIRS_META)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for run in sys.argv[3:]:
        strategy, steps, kill_at = run.split(":")

        def kill(step, metrics, generator, kill_at=int(kill_at)):
            if step == kill_at:
                raise Killed

        try:
            generator, _ = distill(tiny_teacher(), run_params(strategy, int(steps), world), out / f"{strategy}.pt",
                                   DistillInputs(pairs, l2_loss), processes=Processes(rank, world), on_step=kill)
        except Killed:
            sys.exit(3)
        torch.save(generator.state_dict(), out / f"rank{rank}-{strategy}-{steps}.pt")
    dist.destroy_process_group()
