"""Prompt embeddings as each text-to-image pipeline computes them, packed into one `cond` tensor (`text_condition`).

SD v1.5: CLIP's last hidden states. SDXL: the penultimate hidden states of both CLIP encoders side by side, the
second's pooled projection and the size/crop ids (StableDiffusionXLPipeline). SD3: both CLIPs' penultimate states,
zero-padded to T5's width and followed by T5's tokens, with both pooled projections (StableDiffusion3Pipeline).
FLUX: T5's tokens and CLIP's pooled output (FluxPipeline).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from dmdlib.denoisers.text_condition import pack
from dmdlib.errors import TeacherError
from dmdlib.teachers.diffusers import TEXT_TO_IMAGE_KINDS, load_component, pipeline_index, vae_scale_factor

T5_TOKENS = {"sd3": 256, "flux": 512}  # the pipelines' default max_sequence_length


class PromptEncoder:
    """prompts -> packed `cond` [N, rows, dim] with a pipeline folder's own tokenizers and text encoders."""

    def __init__(self, folder: str | os.PathLike, kind: str, sample_shape: tuple[int, ...]):
        if kind not in TEXT_TO_IMAGE_KINDS:
            raise TeacherError(
                f"prompts need a text-to-image teacher (kind {' / '.join(TEXT_TO_IMAGE_KINDS)}), not {kind!r}"
            )
        self.folder, self.kind = Path(folder).expanduser(), kind
        self.index = pipeline_index(self.folder, kind)
        names = {"stable_diffusion": [""], "sdxl": ["", "_2"], "sd3": ["", "_2", "_3"], "flux": ["", "_2"]}[kind]
        self.tokenizers = [self._load(f"tokenizer{suffix}") for suffix in names]
        self.text_encoders = [self._load(f"text_encoder{suffix}").eval().requires_grad_(False) for suffix in names]
        side = sample_shape[-1] * vae_scale_factor(self.folder)
        self.time_ids = torch.tensor(
            [[side, side, 0, 0, side, side]], dtype=torch.float32
        )  # SDXL: original, crop, target

    def _load(self, name: str):
        component = load_component(self.folder, self.index, name)
        if component is None:
            raise TeacherError(
                f"{self.folder}: {name} is absent from model_index.json; the {self.kind} teacher needs it"
            )
        return component

    def _tokens(self, tokenizer, prompts: list[str], length: int | None = None) -> torch.Tensor:
        return tokenizer(
            prompts,
            padding="max_length",
            max_length=length or tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    def _clip_penultimate(self, number: int, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.text_encoders[number](self._tokens(self.tokenizers[number], prompts), output_hidden_states=True)
        return output.hidden_states[-2], output[0]

    @torch.no_grad()
    def parts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(token embeddings [N, tokens, dim], extras [N, width] or None) for `prompts`, before packing."""
        if self.kind == "stable_diffusion":
            return self.text_encoders[0](self._tokens(self.tokenizers[0], prompts))[0].float(), None
        if self.kind == "sdxl":
            (first, _), (second, pooled) = self._clip_penultimate(0, prompts), self._clip_penultimate(1, prompts)
            return torch.cat([first, second], dim=-1).float(), torch.cat(
                [pooled.float(), self.time_ids.expand(len(prompts), -1)], 1
            )
        t5 = self.text_encoders[-1](self._tokens(self.tokenizers[-1], prompts, T5_TOKENS[self.kind]))[0].float()
        if self.kind == "flux":
            return t5, self.text_encoders[0](self._tokens(self.tokenizers[0], prompts)).pooler_output.float()
        (first, pooled_1), (second, pooled_2) = self._clip_penultimate(0, prompts), self._clip_penultimate(1, prompts)
        clip = torch.cat([first, second], dim=-1).float()
        return torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5], dim=-2), torch.cat(
            [pooled_1, pooled_2], -1
        ).float()

    def __call__(self, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
        return torch.cat([pack(*self.parts(prompts[i : i + batch_size])) for i in range(0, len(prompts), batch_size)])

    def uncond(self) -> torch.Tensor:
        """The negative condition each pipeline guides with by default: the empty prompt's embeddings, or zeros
        for SDXL folders with force_zeros_for_empty_prompt (as the stock SDXL checkpoints are saved)."""
        tokens, extras = self.parts([""])
        if self.kind == "sdxl" and self.index.get("force_zeros_for_empty_prompt", True):
            tokens, extras = (
                torch.zeros_like(tokens),
                torch.cat([torch.zeros_like(extras[:, :-6]), self.time_ids], dim=1),
            )
        return pack(tokens, extras)
