"""dmdlib: Distribution Matching Distillation (Yin et al., CVPR 2024) as a library."""

import warnings

__version__ = "0.1.0"

# k-diffusion imports the `clip` package, which imports setuptools' deprecated pkg_resources: every command
# would start with that third-party warning.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=UserWarning)
