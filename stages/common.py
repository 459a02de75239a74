"""What every stage CLI shares: logging, loading params, and turning known errors into messages."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

import torch
import typer

from dmdlib.data import DataError
from dmdlib.denoisers import Denoiser
from dmdlib.params import ParamsError
from dmdlib.teachers import load_teacher

PARAMS_OPTION = typer.Option(
    Path("params.yaml"), "--params", help="YAML params file; the stage reads its own section and validates the whole file."
)

TEACHER_OPTION = typer.Option(Path("models/teacher"), "--teacher", help="Teacher folder written by the `teacher` stage.")
PROMPTS_OPTION = typer.Option(
    Path("data/prompts"), "--prompts", help="Prompt embeddings from the `prompts` stage (text-to-image teachers only)."
)
REFERENCE_FILE = "teacher.json"

# Errors a user can act on (bad params or files, a missing download, a diverged run): printed as one
# clear message without a traceback, unless DMD_TRACEBACK=1 asks for it.
USER_ERRORS = (ParamsError, DataError, ValueError, FileNotFoundError, FloatingPointError)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user-facing error as one message and exit with status 2."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("DMD_TRACEBACK") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(code=2) from None



def compute_device() -> torch.device:
    """The GPU when there is one (hide it with CUDA_VISIBLE_DEVICES=''), else the CPU: accelerate's choice for `distill`."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_teacher(folder: Path) -> tuple[Denoiser, dict]:
    """The frozen teacher written by the `teacher` stage, and its reference (paths resolved against `folder`)."""
    reference_file = folder / REFERENCE_FILE
    if not reference_file.is_file():
        raise FileNotFoundError(f"{reference_file}: no teacher reference; run the `teacher` stage first (`dvc repro teacher`)")
    reference = json.loads(reference_file.read_text())
    for key in ("path", "config"):
        if reference.get(key) and not Path(reference[key]).is_absolute():
            reference[key] = str(folder / reference[key])
    return load_teacher(reference), reference


def conditioning(teacher: "Denoiser", reference: dict, guidance: float, prompts_folder: Path,
                 guidance_range: tuple[float, float] | None = None):
    """(real denoiser, Conditions or None, prompt texts or None) for a teacher.

    Text-to-image teachers draw `cond` from the cached training-prompt embeddings, others use their
    class labels. When guidance is not 1 (or a guidance-conditioned generator is trained), the real
    denoiser applies classifier-free guidance, with the empty prompt or the 'no class' label.
    """
    from dmdlib.denoisers import GuidedDenoiser
    from dmdlib.distill import Conditions
    from dmdlib.text import load_prompt_set

    if reference["kind"] != "stable_diffusion":
        conditions, texts, uncond = Conditions.of(teacher), None, teacher.uncond
    else:
        prompts, _ = load_prompt_set(prompts_folder)
        embeddings = prompts.train_embeddings
        conditions, texts, uncond = Conditions(len(prompts.train), lambda ids: embeddings[ids]), prompts.train, prompts.uncond
    if guidance == 1 and guidance_range is None:
        return teacher, conditions, texts
    if uncond is None:
        raise ValueError("classifier-free guidance (pairs.guidance != 1 or distill.guidance_range) needs a teacher that serves "
                         "'no condition': a text-to-image teacher, or the default teacher trained with teacher.train.label_dropout > 0")
    return GuidedDenoiser(teacher, uncond, guidance), conditions, texts
