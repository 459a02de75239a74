"""The project's own implementations of published diffusion networks, with their original state-dict layouts."""
