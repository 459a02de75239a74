"""Prompts for text-to-image teachers: a prompt file, its train / evaluation split, and the cached embeddings."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dmdlib.data.io import atomic_output
from dmdlib.errors import DataError


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts from a text file (one per line, blank lines skipped) or a Parquet file with a `prompt` column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"{path}: prompt file not found; expected a .txt (one prompt per line) or a .parquet with a 'prompt' column"
        )
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        if "prompt" not in table.column_names:
            raise DataError(f"{path}: no 'prompt' column (columns: {table.column_names})")
        prompts = [str(p) for p in table.column("prompt").to_pylist() if p]
    else:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


@dataclass
class PromptSet:
    """Training and evaluation prompts with their embeddings, and the empty prompt's (for guidance)."""

    train: list[str]
    eval: list[str]
    train_embeddings: torch.Tensor
    eval_embeddings: torch.Tensor
    uncond: torch.Tensor  # [1, tokens, dim]


def split_prompts(prompts: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A deterministic random split into training and evaluation prompts (at least one of each)."""
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    count = min(max(1, round(len(prompts) * eval_fraction)), len(prompts) - 1)
    if len(prompts) < 2:
        raise DataError("need at least 2 prompts: one to train on and one to evaluate")
    return [prompts[i] for i in sorted(order[count:])], [prompts[i] for i in sorted(order[:count])]


def save_prompt_set(folder: str | os.PathLike, prompts: PromptSet, metadata: dict) -> None:
    """Write texts and embeddings atomically (safetensors, texts and `metadata` as JSON in its metadata)."""
    tensors = {
        "train": prompts.train_embeddings.contiguous(),
        "eval": prompts.eval_embeddings.contiguous(),
        "uncond": prompts.uncond.contiguous(),
    }
    info = {"train": prompts.train, "eval": prompts.eval, **metadata}
    with atomic_output(folder) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / "prompts.safetensors"), metadata={"dmd": json.dumps(info)})


def load_prompt_set(folder: str | os.PathLike) -> tuple[PromptSet, dict]:
    """Inverse of `save_prompt_set`: the prompts and the metadata they were made with."""
    path = Path(folder) / "prompts.safetensors"
    if not path.is_file():
        raise DataError(
            f"{path}: no prompt embeddings; run the `prompts` stage first (`dvc repro pipelines/sd/dvc.yaml`)"
        )
    with safe_open(str(path), "pt") as handle:
        info = json.loads(handle.metadata()["dmd"])
    tensors = load_file(str(path))
    prompts = PromptSet(info.pop("train"), info.pop("eval"), tensors["train"], tensors["eval"], tensors["uncond"])
    return prompts, info
