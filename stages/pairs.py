"""`pairs` stage: the teacher's deterministic ODE outputs from seeded noise, as resumable Parquet shards.

Runs in one process, or in several with `torchrun --nproc_per_node N -m stages.pairs ...` or
`accelerate launch --num_processes N -m stages.pairs ...` (CPU: gloo); processes split the shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import typer
from tqdm.auto import tqdm

from dmdlib.pairs import ShardPlan, generate_pairs
from dmdlib.params import PairsParams, load_params
from dmdlib.sampling import heun_sample, make_scheduler, scheduler_sample
from dmdlib.teachers import teacher_digest
from stages.common import PARAMS_OPTION, PROMPTS_OPTION, TEACHER_OPTION, conditioning, read_teacher, setup_logging, user_errors

log = logging.getLogger("pairs")
app = typer.Typer(add_completion=False, help=__doc__)


def pair_metadata(teacher, params: PairsParams, prompts: list[str] | None = None) -> dict:
    """What a pair shard must agree on with the teacher, prompts and settings that read it."""
    conditions = hashlib.sha256(json.dumps(prompts).encode()).hexdigest() if prompts else teacher.num_classes
    return {
        "teacher": teacher_digest(teacher), "sampler": params.sampler, "steps": params.steps,
        "guidance": params.guidance, "shape": list(teacher.sample_shape), "dtype": params.dtype, "conditions": conditions,
    }


def make_sampler(real_denoiser, params: PairsParams, conditions=None, device: torch.device | None = None):
    """The ODE solver named in params, as sample(noise, condition ids) -> image (or latent) on the CPU.

    The solver runs on `device` (the real denoiser must be there already); inputs may come from the CPU.
    """
    device = device or torch.device("cpu")
    lookup = (lambda ids: None) if conditions is None else (lambda ids: conditions.lookup(ids.cpu()).to(device))
    if params.sampler == "heun":
        solve = lambda noise, cond: heun_sample(real_denoiser, noise, params.steps, cond)  # noqa: E731
    elif real_denoiser.scheduler_config is None:
        raise ValueError(f"sampler {params.sampler!r} needs a discrete-time (diffusers) teacher; use 'heun' for this one")
    else:
        scheduler = make_scheduler(params.sampler, real_denoiser.scheduler_config)
        solve = lambda noise, cond: scheduler_sample(real_denoiser, noise, scheduler, params.steps, cond)  # noqa: E731
    return lambda noise, ids: solve(noise.to(device), lookup(ids)).cpu()


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = TEACHER_OPTION,
    out: Path = typer.Option(Path("data/pairs"), help="Folder of pair shards (shard-NNNNN.parquet)."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Sample the configured number of pairs; shards already complete and valid are kept."""
    from accelerate import PartialState

    setup_logging()
    with user_errors():
        config = load_params(params).pairs
        state = PartialState()
        denoiser, reference = read_teacher(teacher)
        real_denoiser, conditions, texts = conditioning(denoiser, reference, config.guidance, prompts)
        real_denoiser = real_denoiser.to(state.device)
        plan = ShardPlan(config.count, config.shard_size, config.first_seed)
        if state.is_main_process:
            for stale in sorted(out.glob("shard-*.parquet"))[plan.shards:]:
                stale.unlink()  # left from an earlier, larger count
        bar = tqdm(total=-(-config.count // state.num_processes), desc="pairs", unit="pair",
                   disable=not state.is_main_process, mininterval=1.0)
        written = generate_pairs(
            out, plan, pair_metadata(denoiser, config, texts), make_sampler(real_denoiser, config, conditions, state.device),
            denoiser.sample_shape, conditions.count if conditions else 0, config.batch_size, state.process_index,
            state.num_processes, progress=bar.update, prompts=texts,
        )
        bar.close()
        state.wait_for_everyone()
        log.info("process %d/%d wrote %d shards; %d pairs in %s", state.process_index + 1, state.num_processes,
                 len(written), config.count, out)


if __name__ == "__main__":
    app()
