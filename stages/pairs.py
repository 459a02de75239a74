"""`pairs` stage: the teacher's deterministic ODE outputs from seeded noise, as resumable Parquet shards.

Runs in one process, or in several with `torchrun --nproc_per_node N -m stages.pairs ...` or
`accelerate launch --num_processes N -m stages.pairs ...` (CPU: gloo); processes split the shards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import typer
from tqdm.auto import tqdm

from dmdlib.pairs import ShardPlan, generate_pairs
from dmdlib.params import PairsParams, load_params
from dmdlib.sampling import heun_sample, make_scheduler, scheduler_sample
from dmdlib.teachers import teacher_digest
from stages.common import PARAMS_OPTION, read_teacher, setup_logging, user_errors

log = logging.getLogger("pairs")
app = typer.Typer(add_completion=False, help=__doc__)


def pair_metadata(teacher, params: PairsParams) -> dict:
    """What a pair shard must agree on with the teacher and settings that read it."""
    return {
        "teacher": teacher_digest(teacher), "sampler": params.sampler, "steps": params.steps,
        "guidance": params.guidance, "shape": list(teacher.sample_shape), "dtype": params.dtype,
    }


def make_sampler(teacher, params: PairsParams):
    """The ODE solver named in params, as sample(noise, labels) -> image."""
    if params.sampler == "heun":
        return lambda noise, labels: heun_sample(teacher, noise, params.steps, labels)
    if not hasattr(teacher, "scheduler_config"):
        raise ValueError(f"sampler {params.sampler!r} needs a discrete-time (diffusers) teacher; use 'heun' for this one")
    scheduler = make_scheduler(params.sampler, teacher.scheduler_config)
    return lambda noise, labels: scheduler_sample(teacher, noise, scheduler, params.steps, labels)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = typer.Option(Path("models/teacher"), help="Teacher folder written by the `teacher` stage."),
    out: Path = typer.Option(Path("data/pairs"), help="Folder of pair shards (shard-NNNNN.parquet)."),
) -> None:
    """Sample the configured number of pairs; shards already complete and valid are kept."""
    from accelerate import PartialState

    setup_logging()
    with user_errors():
        config = load_params(params).pairs
        state = PartialState()
        denoiser, _ = read_teacher(teacher)
        plan = ShardPlan(config.count, config.shard_size, config.first_seed)
        if state.is_main_process:
            for stale in sorted(out.glob("shard-*.parquet"))[plan.shards:]:
                stale.unlink()  # left from an earlier, larger count
        bar = tqdm(total=-(-config.count // state.num_processes), desc="pairs", unit="pair",
                   disable=not state.is_main_process, mininterval=1.0)
        torch.manual_seed(0)  # samplers here are deterministic; this only pins any library default
        written = generate_pairs(
            out, plan, pair_metadata(denoiser, config), make_sampler(denoiser, config), denoiser.sample_shape,
            denoiser.num_classes, config.batch_size, state.process_index, state.num_processes, progress=bar.update,
        )
        bar.close()
        state.wait_for_everyone()
        log.info("process %d/%d wrote %d shards; %d pairs in %s", state.process_index + 1, state.num_processes,
                 len(written), config.count, out)


if __name__ == "__main__":
    app()
