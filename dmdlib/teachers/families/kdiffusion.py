"""k-diffusion checkpoints (the embedded default teacher is one): a .safetensors with its config in the metadata, or a
train.py .pth with its config JSON."""

from __future__ import annotations

from dmdlib.teachers.family import Family
from dmdlib.teachers.loading import load_kdiffusion

FAMILY = Family(
    kind="kdiffusion",
    summary="a k-diffusion checkpoint (+ `config` JSON unless its .safetensors carries it)",
    load=lambda reference: load_kdiffusion(reference.path, reference.config),
)
