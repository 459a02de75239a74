"""dmdlib: Distribution Matching Distillation (Yin et al., CVPR 2024) as a library."""

__version__ = "0.1.0"
