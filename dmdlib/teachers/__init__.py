"""Teachers behind the denoiser interface: the default one built here, real ones loaded from local files of every
family (one module each in `families/`: k-diffusion, diffusers image and video pipelines, NVlabs EDM/EDM2 snapshots),
their decoders and prompt encoders, and the teacher folder the pipeline's stages share (`reference`)."""
