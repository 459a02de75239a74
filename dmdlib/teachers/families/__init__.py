"""The teacher families, one module each: `FAMILIES` maps teacher.kind to its `Family` record, `load_teacher` turns any
`TeacherReference` back into a frozen denoiser. A new family, image or video, is one module listed here."""

from __future__ import annotations

from dmdlib.denoisers import Denoiser, frozen
from dmdlib.errors import TeacherError
from dmdlib.teachers.diffusers import pipeline_index
from dmdlib.teachers.families import (
    cogvideox,
    diffusers_ddpm,
    dit,
    edm,
    flux,
    kdiffusion,
    ltx,
    sd3,
    sdxl,
    stable_diffusion,
    wan,
)
from dmdlib.teachers.family import Family, TeacherReference

FAMILIES: dict[str, Family] = {
    family.kind: family
    for family in (
        kdiffusion.FAMILY,
        diffusers_ddpm.FAMILY,
        stable_diffusion.FAMILY,
        sdxl.FAMILY,
        dit.FAMILY,
        sd3.FAMILY,
        flux.FAMILY,
        edm.EDM,
        edm.EDM2,
        wan.FAMILY,
        cogvideox.FAMILY,
        ltx.FAMILY,
    )
}


def family_of(kind: str) -> Family:
    """The family of teacher.kind `kind`, or an error listing the kinds there are."""
    if kind not in FAMILIES:
        raise TeacherError(f"teacher kind {kind!r}: expected one of {', '.join(FAMILIES)}; re-run the `teacher` stage")
    return FAMILIES[kind]


def pipeline_kinds() -> dict[str, str]:
    """Diffusers pipeline class -> the teacher.kind that reads it."""
    return {family.pipeline_class: kind for kind, family in FAMILIES.items() if family.pipeline_class}


def load_teacher(reference: TeacherReference | dict) -> Denoiser:
    """A frozen denoiser from a teacher reference (or its JSON dict), whatever its family."""
    reference = TeacherReference.of(reference)
    family = family_of(reference.kind)
    if family.pipeline_class and family.network_folder:  # a pipeline folder: a wrong one named with its kind
        pipeline_index(reference.path, family, pipeline_kinds())
    return frozen(family.load(reference))
