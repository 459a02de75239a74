"""`prompts` stage (text-to-image teachers): split the prompt file and embed every prompt once with the
teacher's own text encoder; later stages read the cached embeddings."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dmdlib.errors import DataError
from dmdlib.params import load_params
from dmdlib.teachers import teacher_digest
from dmdlib.text import PromptSet, encode_prompts, load_text_encoder, read_prompts, save_prompt_set, split_prompts
from stages.common import PARAMS_OPTION, setup_logging, user_errors
from stages.teacher_reference import TEACHER_OPTION, read_teacher

log = logging.getLogger("prompts")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = TEACHER_OPTION,
    out: Path = typer.Option(Path("data/prompts"), help="Folder for prompts.safetensors (embeddings, texts in metadata)."),
) -> None:
    """Write training and evaluation prompts with their CLIP embeddings and the empty prompt's."""
    setup_logging()
    with user_errors():
        all_params = load_params(params)
        config = all_params.prompts
        denoiser, reference = read_teacher(teacher)
        if reference["kind"] != "stable_diffusion":
            raise DataError(f"{teacher}: prompts need a text-to-image teacher (kind stable_diffusion), not {reference['kind']!r}")
        if not config.file:
            raise DataError("prompts.file is not set: give a .txt (one prompt per line) or a .parquet with a 'prompt' column")
        train, evaluation = split_prompts(read_prompts(config.file), config.eval_fraction, config.seed)
        tokenizer, text_encoder = load_text_encoder(reference["path"])
        embed = lambda texts: encode_prompts(tokenizer, text_encoder, texts, config.batch_size)
        prompts = PromptSet(train, evaluation, embed(train), embed(evaluation), embed([""]))
        save_prompt_set(out, prompts, {"teacher": teacher_digest(denoiser)})
    log.info("wrote %s: %d training and %d evaluation prompts, embeddings %s", out, len(train), len(evaluation),
             tuple(prompts.train_embeddings.shape[1:]))


if __name__ == "__main__":
    app()
