"""Prompt embeddings as each text-conditioned pipeline computes them (its family's `encode_prompts`), packed into one
`cond` tensor (`text_condition`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dmdlib.denoisers.text_condition import pack
from dmdlib.errors import TeacherError
from dmdlib.teachers.diffusers import load_component, pipeline_index, vae_scale_factor
from dmdlib.teachers.families import FAMILIES, family_of


class PromptEncoder:
    """prompts -> packed `cond` [N, rows, dim] with a pipeline folder's own tokenizers and text encoders."""

    def __init__(self, folder: str | os.PathLike, kind: str, sample_shape: tuple[int, ...]):
        self.family = family_of(kind)
        if not self.family.text:
            text_kinds = " / ".join(k for k, family in FAMILIES.items() if family.text)
            raise TeacherError(f"prompts need a text-conditioned teacher (kind {text_kinds}), not {kind!r}")
        self.folder, self.kind = Path(folder).expanduser(), kind
        self.index = pipeline_index(self.folder, self.family)
        names = self.family.text_encoders
        self.tokenizers = [self._load(f"tokenizer{suffix}") for suffix in names]
        self.text_encoders = [self._load(f"text_encoder{suffix}").eval().requires_grad_(False) for suffix in names]
        self.sample_shape = sample_shape

    @property
    def pixels_per_side(self) -> int:
        """The sampled image's side in pixels (SDXL's size ids)."""
        return self.sample_shape[-1] * vae_scale_factor(self.folder)

    def _load(self, name: str):
        component = load_component(self.folder, self.index, name)
        if component is None:
            raise TeacherError(
                f"{self.folder}: {name} is absent from model_index.json; the {self.kind} teacher needs it"
            )
        return component

    def tokens(self, number: int, prompts: list[str], length: int | None = None) -> torch.Tensor:
        """Token ids of the `number`th tokenizer, padded to `length` (default: its model_max_length)."""
        tokenizer = self.tokenizers[number]
        return tokenizer(
            prompts,
            padding="max_length",
            max_length=length or tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    def clip_penultimate(self, number: int, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate hidden states, first output) of the `number`th CLIP text encoder."""
        output = self.text_encoders[number](self.tokens(number, prompts), output_hidden_states=True)
        return output.hidden_states[-2], output[0]

    @torch.no_grad()
    def parts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(token embeddings [N, tokens, dim], extras [N, width] or None) for `prompts`, before packing."""
        return self.family.encode_prompts(self, prompts)

    def __call__(self, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
        return torch.cat([pack(*self.parts(prompts[i : i + batch_size])) for i in range(0, len(prompts), batch_size)])

    @torch.no_grad()
    def uncond(self) -> torch.Tensor:
        """The negative condition the pipeline guides with by default: the empty prompt's embeddings, unless the
        family says otherwise (SDXL: zeros)."""
        if self.family.negative_prompt is not None:
            return self.family.negative_prompt(self)
        return pack(*self.parts([""]))
