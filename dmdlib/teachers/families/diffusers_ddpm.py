"""DDPM (`UNet2DModel` with its scheduler config, e.g. google/ddpm-cifar10-32): a pixel UNet on a DDPM schedule;
exported as a `DDPMPipeline`."""

from __future__ import annotations

from dmdlib.teachers.diffusers import load_diffusers_ddpm, one_step_scheduler
from dmdlib.teachers.family import Family

FAMILY = Family(
    kind="diffusers_ddpm",
    summary="a UNet2DModel folder (DDPMPipeline layout or files at the top)",
    load=lambda reference: load_diffusers_ddpm(reference.path),
    pipeline_class="DDPMPipeline",
    one_step_scheduler=one_step_scheduler,
    export_call="pipe(num_inference_steps=1, generator=torch.Generator().manual_seed(0))",
)
