"""What a teacher family is (`Family`) and how a teacher is described (`TeacherReference`); the registry of families
is `dmdlib.teachers.families`, one module per family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict


class TeacherReference(BaseModel):
    """The small JSON record (`teacher.json`, a generator's `teacher`) from which a family's loader rebuilds the
    frozen teacher. Only the fields a writer set are written back (`as_json`), in this order."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    path: str | None = None  # weights file or pipeline folder
    config: str | None = None  # k-diffusion config JSON, or an EDM network's
    vae: str | None = None  # EDM2 latent snapshots: the VAE folder
    encoder: dict[str, Any] | None = None  # EDM2 latent snapshots: VAE name, scale and bias
    trained: dict[str, Any] | None = None  # the default teacher: its settings' fingerprint and steps
    resolution: int | None = None  # diffusers pipelines: pixels per side to distil at
    embedded_guidance: float | None = None  # FLUX.1-dev: the generator's guidance-embedding input
    frames: int | None = None  # video pipelines: frames per clip to distil at
    source: str | None = None  # digest of the imported files

    @classmethod
    def of(cls, reference: TeacherReference | dict[str, Any]) -> TeacherReference:
        """`reference` itself, or its JSON dict read (and checked) as one."""
        return reference if isinstance(reference, cls) else cls.model_validate(reference)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)

    def with_paths_under(self, folder: str | Path) -> TeacherReference:
        """The reference with its relative `path`, `config` and `vae` made whole against `folder`."""
        update = {
            key: str(Path(folder) / value)
            for key in ("path", "config", "vae")
            if (value := getattr(self, key)) and not Path(value).is_absolute()
        }
        return self.model_copy(update=update)


@dataclass(frozen=True)
class Family:
    """One teacher family: how its files load into a `Denoiser` and what the rest of the pipeline needs to know of it.

    Hooks take the family's own objects: `encode_prompts(prompt_encoder, prompts)` returns (token embeddings, extras
    or None) before packing (`text_condition.pack`); `negative_prompt(prompt_encoder)` the packed condition it guides
    against (default: the empty prompt's); `one_step_scheduler(denoiser, sigma)` the diffusers scheduler with which
    its stock pipeline takes a one-step generator's step; `decoder(vae)` latents -> images in [-1, 1].
    """

    kind: str  # teacher.kind
    summary: str  # what `path` points at, for teacher.kind's help
    load: Callable[[TeacherReference], Any]  # reference -> Denoiser (not yet frozen)
    pipeline_class: str | None = None  # diffusers pipeline named by model_index.json, and the export's class
    network_folder: str | None = None  # the pipeline's denoising network ('unet', 'transformer')
    text_encoders: tuple[str, ...] = ()  # component suffixes ('', '_2', ...) of tokenizer / text_encoder
    encode_prompts: Callable[[Any, list[str]], tuple[torch.Tensor, torch.Tensor | None]] | None = None
    negative_prompt: Callable[[Any], torch.Tensor] | None = None
    one_step_scheduler: Callable[[Any, float], Any] | None = None
    decoder: Callable[[Any], Any] | None = None
    latent: bool = False  # denoises a VAE's latents (in the pipeline folder's vae/) rather than pixels
    video: bool = False  # samples are clips (latents with a frame axis)
    snapshot: bool = False  # the teacher stage converts the file once (NVlabs pickles) rather than reading it
    export_call: str | None = None  # how the exported stock pipeline takes the generator's one step
    options: tuple[str, ...] = ()  # the teacher params (TeacherReference fields) it reads besides path and config

    @property
    def text(self) -> bool:
        """Prompted through text encoders (evaluated on prompts, not on the prepared data)."""
        return bool(self.text_encoders)
