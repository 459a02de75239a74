"""`sample`: images from a distilled generator into a PNG folder and/or one .npz, from seeds.

Not a pipeline stage: run it on any generator folder. Sample i comes from seed first_seed + i exactly as `evaluate`
draws it (noise, and the class label for a class-conditional teacher), so the default seeds give evaluate's images
(a few-step generator's re-noising also matches when --batch-size is evaluate.batch_size). Text-to-image generators
take prompts from a file (prompt i mod their count), embedded with the teacher's own text encoders.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image
from tqdm.auto import tqdm

from dmd.stages.common import compute_device, setup_logging, user_errors
from dmdlib.data.images import save_gif, save_grid, to_uint8
from dmdlib.data.io import atomic_output, check_writable
from dmdlib.data.prompts import read_prompts
from dmdlib.errors import ParamsError
from dmdlib.generators.generator import generate, generator_reference, load_generator
from dmdlib.generators.seeds import seeded_batch
from dmdlib.params import EvaluateParams
from dmdlib.teachers.families import family_of
from dmdlib.teachers.prompt_encoders import PromptEncoder
from dmdlib.teachers.reference import image_decoder

log = logging.getLogger("sample")
app = typer.Typer(add_completion=False, help=__doc__)
EVALUATE_FIRST_SEED = EvaluateParams.model_fields["first_seed"].default


@app.command()
def main(
    generator: Path = typer.Option(Path("models/generator"), help="Generator folder from the `distill` stage."),
    count: int = typer.Option(64, min=1, help="Number of images."),
    first_seed: int = typer.Option(
        EVALUATE_FIRST_SEED, min=0, help="Image i uses seed first_seed + i (default: evaluate.first_seed's)."
    ),
    label: int | None = typer.Option(
        None, help="Class label of every image (class-conditional generators); default: each seed's own draw."
    ),
    prompts: Path | None = typer.Option(
        None, help="Prompt file (.txt, one per line, or .parquet with a 'prompt' column): text-to-image generators."
    ),
    steps: int | None = typer.Option(None, min=1, help="Generator steps of a few-step generator (default: all)."),
    guidance: float | None = typer.Option(None, help="Guidance scale of a guidance-conditioned generator."),
    batch_size: int = typer.Option(64, min=1, help="Images per generator call."),
    device: str = typer.Option("auto", help="'auto' (the GPU when there is one), 'cpu', 'cuda' or 'cuda:N'."),
    png_dir: Path | None = typer.Option(
        None,
        help="New folder for one PNG per image, <seed>.png (clean-fid's and EDM's fid.py's input); a video "
        "generator's clips as <seed>.png (frames side by side) and <seed>.gif.",
    ),
    npz: Path | None = typer.Option(
        None,
        help=".npz file: arr_0 uint8 [N, H, W, C] (ADM's evaluator layout; video: [N, frames, H, W, C]), arr_1 the "
        "class labels if any.",
    ),
) -> None:
    """Write `count` images of the generator, seeded as `evaluate` seeds them."""
    setup_logging()
    with user_errors():
        if png_dir is None and npz is None:
            raise ParamsError("nothing to write: give --png-dir FOLDER, --npz FILE, or both")
        if png_dir is not None and png_dir.exists() and any(png_dir.iterdir()):
            raise ParamsError(f"--png-dir {png_dir}: exists and is not empty; give a new folder (nothing is deleted)")
        check_writable(*[path for path in (png_dir, npz) if path is not None])
        target = compute_device() if device == "auto" else torch.device(device)
        reference, model = generator_reference(generator), load_generator(generator).to(target)
        noise, cond, labels = _inputs(model, reference, count, first_seed, label, prompts, batch_size)
        latents = generate(model, noise, cond, batch_size, steps, guidance, progress=True)
        decoder = image_decoder(reference)
        images = _decoded(latents, decoder.to(target) if decoder is not None else None, batch_size)
        if family_of(reference.kind).video:  # the decoder gives each clip's frames one after another
            images = images.reshape(count, len(images) // count, *images.shape[1:])
        if png_dir is not None:
            _write_pngs(png_dir, images, first_seed)
        if npz is not None:
            with atomic_output(npz) as tmp, tmp.open("wb") as handle:
                np.savez(handle, arr_0=images, **({"arr_1": labels.numpy()} if labels is not None else {}))
        log.info("wrote %d images %s from %s", count, "x".join(map(str, images.shape[1:])), generator)


def _inputs(model, reference, count: int, first_seed: int, label, prompts: Path | None, batch_size: int):
    """(noise, cond for the generator, class labels or None) of the seeds."""
    shape, classes = model.denoiser.sample_shape, model.denoiser.num_classes
    if family_of(reference.kind).text:
        if prompts is None:
            raise ParamsError(f"a {reference.kind} generator samples from prompts: give --prompts FILE")
        texts = read_prompts(prompts)
        embeddings = PromptEncoder(reference.path, reference.kind, shape)(texts, batch_size)
        noise, _ = seeded_batch(first_seed, count, shape, 0)
        return noise, embeddings[torch.arange(count) % len(texts)], None
    noise, labels = seeded_batch(first_seed, count, shape, classes)
    if label is not None:
        if not classes or not 0 <= label < classes:
            raise ParamsError(
                f"--label {label}: the generator has {classes or 'no'} classes"
                + (f" (labels 0 to {classes - 1})" if classes else "; leave --label out")
            )
        labels = torch.full((count,), label)
    return noise, labels, labels


def _decoded(latents: torch.Tensor, decoder, batch_size: int) -> np.ndarray:
    """uint8 [N, H, W, C] images; a latent generator's through the teacher's VAE, in batches."""
    if decoder is None:
        return to_uint8(latents)
    device = next(decoder.parameters()).device
    parts = [
        to_uint8(decoder(latents[i : i + batch_size].to(device)))
        for i in tqdm(range(0, len(latents), batch_size), desc="decode", unit="batch", leave=False)
    ]
    return np.concatenate(parts)


def _write_pngs(folder: Path, images: np.ndarray, first_seed: int) -> None:
    """<seed>.png per image; per clip ([N, frames, H, W, C]) its frames side by side and <seed>.gif."""
    with atomic_output(folder) as tmp:
        tmp.mkdir()
        for i, image in enumerate(images):
            name = f"{first_seed + i:08d}"
            if image.ndim == 4:
                save_gif(tmp / f"{name}.gif", image)
                save_grid(tmp / f"{name}.png", image, columns=len(image))
            else:
                Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp / f"{name}.png")


if __name__ == "__main__":
    app()
