"""NVlabs EDM and EDM2 network snapshots (.pkl), read without running their code and converted once by the `teacher`
stage into safetensors weights and a JSON config; EDM2's latent snapshots decode with the VAE they name."""

from __future__ import annotations

from dmdlib.teachers.family import Family
from dmdlib.teachers.loading import load_edm

EDM = Family(
    kind="edm",
    summary="an NVlabs EDM network snapshot .pkl",
    load=lambda reference: load_edm(reference.path, reference.config),
    snapshot=True,
)
EDM2 = Family(
    kind="edm2",
    summary="an NVlabs EDM2 network snapshot .pkl (latent ones with `vae`)",
    load=lambda reference: load_edm(reference.path, reference.config),
    snapshot=True,
)
