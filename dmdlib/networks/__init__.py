"""The project's own implementations of published diffusion networks, with their original state-dict layouts.

Provenance: DDPM++ and NCSN++ (`song_unet`, Song et al. 2021), ADM (`dhariwal_unet`, Dhariwal & Nichol 2021), the
EDM preconditionings (`edm_precond`, Karras et al. 2022, Table 1) and EDM2's magnitude-preserving UNet (`edm2`,
Karras et al. 2024) are written here from those papers, and checked against outputs of NVlabs' own code on its
snapshots (tests/test_edm.py with ../shared/fixtures). NVlabs' code (CC BY-NC-SA 4.0) was read, not copied: only the
parameter names and constructor arguments follow it, so that its published snapshots load. MIT, as the project.
"""
