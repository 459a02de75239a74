"""`prompts` stage (text-to-image teachers): split the prompt file and embed every prompt once with the
teacher's own text encoder; later stages read the cached embeddings."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dmd.stages.common import PARAMS_OPTION, TEACHER_OPTION, setup_logging, user_errors
from dmdlib.data.io import check_writable
from dmdlib.data.prompts import PromptSet, read_prompts, save_prompt_set, split_prompts
from dmdlib.errors import DataError
from dmdlib.params import load_params
from dmdlib.teachers.loading import teacher_digest
from dmdlib.teachers.prompt_encoders import PromptEncoder
from dmdlib.teachers.reference import read_teacher

log = logging.getLogger("prompts")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = TEACHER_OPTION,
    out: Path = typer.Option(
        Path("data/prompts"), help="Folder for prompts.safetensors (embeddings, texts in metadata)."
    ),
) -> None:
    """Write training and evaluation prompts with their embeddings (the teacher's own text encoders) and the negative
    prompt's."""
    setup_logging()
    with user_errors():
        config = load_params(params, "prompts").prompts
        check_writable(out)
        denoiser, reference = read_teacher(teacher)
        encoder = PromptEncoder(reference.path, reference.kind, denoiser.sample_shape)
        if not config.file:
            raise DataError(
                "prompts.file is not set: give a .txt (one prompt per line) or a .parquet with a 'prompt' column"
            )
        train, evaluation = split_prompts(read_prompts(config.file), config.eval_fraction, config.seed)
        prompts = PromptSet(
            train,
            evaluation,
            encoder(train, config.batch_size),
            encoder(evaluation, config.batch_size),
            encoder.uncond(),
        )
        save_prompt_set(out, prompts, {"teacher": teacher_digest(denoiser)})
    log.info(
        "wrote %s: %d training and %d evaluation prompts, embeddings %s",
        out,
        len(train),
        len(evaluation),
        tuple(prompts.train_embeddings.shape[1:]),
    )


if __name__ == "__main__":
    app()
