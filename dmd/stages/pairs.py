"""`pairs` stage: the teacher's deterministic ODE outputs from seeded noise, as resumable Parquet shards.

Runs in one process, or in several with `torchrun --nproc_per_node N -m dmd.stages.pairs ...` or
`accelerate launch --num_processes N -m dmd.stages.pairs ...` (CPU: gloo); processes split the shards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import typer
from tqdm.auto import tqdm

from dmd.stages.common import PARAMS_OPTION, PROMPTS_OPTION, TEACHER_OPTION, code_of, setup_logging, user_errors
from dmdlib.data.io import claim_folder, single_writer
from dmdlib.generators.seeds import make_sampler
from dmdlib.params import DistillParams, load_params
from dmdlib.teachers.reference import conditioning, read_teacher
from dmdlib.training.pairs import ShardPlan, generate_pairs, pair_metadata

log = logging.getLogger("pairs")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = TEACHER_OPTION,
    out: Path = typer.Option(Path("data/pairs"), help="Folder of pair shards (shard-NNNNN.parquet)."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Sample the configured number of pairs; shards already complete and valid are kept. Nothing is made when
    `distill` reads no pairs (a data-free objective, or lambda_reg 0)."""
    from accelerate import PartialState

    setup_logging()
    with user_errors():
        config = (all_params := load_params(params, "pairs", "distill")).pairs
        claim_folder(out)  # shards are written into it one by one: a folder of anything else is refused
        if not all_params.distill.reads_pairs:
            return _none_needed(out, all_params.distill)
        state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes under torchrun: gloo
        with single_writer(out, state.process_index):  # a second run on this folder would write the same shards
            denoiser, reference = read_teacher(teacher)
            real_denoiser, conditions, texts = conditioning(denoiser, reference, config.guidance, prompts)
            real_denoiser = real_denoiser.to(state.device)
            plan = ShardPlan(config.count, config.shard_size, config.first_seed)
            if state.is_main_process:
                for stale in sorted(out.glob("shard-*.parquet"))[plan.shards :]:
                    stale.unlink()  # left from an earlier, larger count
            bar = tqdm(
                total=-(-config.count // state.num_processes),
                desc="pairs",
                unit="pair",
                disable=not state.is_main_process,
                mininterval=1.0,
            )
            written = generate_pairs(
                out,
                plan,
                {**pair_metadata(denoiser, config, texts), "code": code_of(__spec__.name)},
                make_sampler(real_denoiser, config, conditions, state.device),
                denoiser.sample_shape,
                conditions.count if conditions else 0,
                config.batch_size,
                state.process_index,
                state.num_processes,
                progress=bar.update,
                prompts=texts,
            )
            bar.close()
            state.wait_for_everyone()
            log.info(
                "process %d/%d wrote %d shards; %d pairs in %s",
                state.process_index + 1,
                state.num_processes,
                len(written),
                config.count,
                out,
            )


def _none_needed(out: Path, distill: DistillParams) -> None:
    """The output of a run whose distill reads no pairs: the folder as it is (an empty one if new), so under
    `dvc repro` distill waits on nothing and pair settings re-run nothing; shards of an earlier objective stay for
    when it comes back."""
    log.info(
        "distill.objective %r with lambda_reg %g reads no pairs: none made (%d shards already in %s kept)",
        distill.objective,
        distill.lambda_reg,
        len(list(out.glob("shard-*.parquet"))),
        out,
    )


if __name__ == "__main__":
    app()
