"""The `sample` command: evaluate's seeds give evaluate's images, as PNGs and as an .npz, for a pixel-space
class-conditional generator and a latent text-to-image one (decoded with the teacher's VAE)."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_dvc_repro import save_teacher
from tiny_models import (
    save_tiny_ddpm,
    save_tiny_dit,
    save_tiny_flux,
    save_tiny_sd3,
    save_tiny_sdxl,
    save_tiny_stable_diffusion,
)
from typer.testing import CliRunner

from dmd.stages.sample import app
from dmdlib.data.images import to_uint8
from dmdlib.generators.generator import Generator, generate, save_generator
from dmdlib.generators.seeds import seeded_inputs
from dmdlib.params import EvaluateParams
from dmdlib.teachers.families import load_teacher
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.prompt_encoders import PromptEncoder
from dmdlib.teachers.reference import image_decoder


def sample(*args):
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.output


def test_samples_are_evaluates_images(tmp_path):
    save_teacher(tmp_path / "teacher.safetensors", seed=0)
    reference = {"kind": "kdiffusion", "path": str(tmp_path / "teacher.safetensors")}
    generator = Generator.from_teacher(load_teacher(reference), [80.0])
    save_generator(tmp_path / "generator", generator, reference)
    code, output = sample(
        "--generator", tmp_path / "generator", "--count", 5, "--batch-size", 2,
        "--png-dir", tmp_path / "png", "--npz", tmp_path / "samples.npz",
    )  # fmt: skip
    assert code == 0, output

    first = EvaluateParams().first_seed  # the seeds evaluate measures every model on
    inputs = [seeded_inputs(first + i, generator.denoiser.sample_shape, 10) for i in range(5)]
    labels = torch.tensor([label for _, label in inputs])
    with torch.no_grad():
        expected = to_uint8(generator(torch.stack([z for z, _ in inputs]), labels))
    saved = np.load(tmp_path / "samples.npz")
    assert saved["arr_0"].shape == (5, 8, 8, 1) and np.array_equal(saved["arr_0"], expected)
    assert np.array_equal(saved["arr_1"], labels.numpy()) and len(set(labels.tolist())) > 1
    for i in range(5):
        png = np.asarray(Image.open(tmp_path / "png" / f"{first + i:08d}.png"))
        assert np.array_equal(png, expected[i, ..., 0])

    code, _ = sample("--generator", tmp_path / "generator", "--count", 3, "--label", 7, "--npz", tmp_path / "s.npz")
    assert code == 0 and np.load(tmp_path / "s.npz")["arr_1"].tolist() == [7, 7, 7]
    code, output = sample("--generator", tmp_path / "generator", "--png-dir", tmp_path / "png")
    assert code == 2 and "exists and is not empty" in output  # nothing of it deleted
    assert len(list((tmp_path / "png").glob("*.png"))) == 5
    code, output = sample("--generator", tmp_path / "generator", "--label", 10, "--npz", tmp_path / "x.npz")
    assert code == 2 and "--label 10: the generator has 10 classes (labels 0 to 9)" in output
    code, output = sample("--generator", tmp_path / "generator")
    assert code == 2 and "--png-dir" in output


def test_text_to_image_samples_decode_prompts(tmp_path):
    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    reference = {"kind": "stable_diffusion", "path": str(folder)}
    generator = Generator.from_teacher(load_teacher(reference))
    save_generator(tmp_path / "generator", generator, reference)
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    code, output = sample(
        "--generator", tmp_path / "generator", "--count", 3, "--prompts", tmp_path / "prompts.txt",
        "--npz", tmp_path / "samples.npz",
    )  # fmt: skip
    assert code == 0, output

    shape = generator.denoiser.sample_shape
    noise = torch.stack([seeded_inputs(EvaluateParams().first_seed + i, shape, 0)[0] for i in range(3)])
    cond = PromptEncoder(folder, "stable_diffusion", shape)(["a cat", "a dog"])[torch.tensor([0, 1, 0])]
    with torch.no_grad():
        expected = to_uint8(image_decoder(TeacherReference.of(reference))(generate(generator, noise, cond)))
    images = np.load(tmp_path / "samples.npz")["arr_0"]
    assert images.shape == expected.shape and images.shape[-1] == 3 and "arr_1" not in np.load(tmp_path / "samples.npz")
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1  # batched VAE decoding, rounded
    code, output = sample("--generator", tmp_path / "generator", "--npz", tmp_path / "x.npz")
    assert code == 2 and "give --prompts FILE" in output


@pytest.mark.parametrize("kind", ["diffusers_ddpm", "sdxl", "sd3", "flux", "dit"])
def test_every_diffusers_family_samples(tmp_path, kind):
    """One image per seed from a tiny generator of each family, decoded with its teacher's VAE when latent."""
    build = {
        "diffusers_ddpm": save_tiny_ddpm,
        "sdxl": save_tiny_sdxl,
        "sd3": save_tiny_sd3,
        "flux": save_tiny_flux,
        "dit": save_tiny_dit,
    }[kind]
    reference = {"kind": kind, "path": str(build(tmp_path / kind))}
    reference |= {"resolution": 16, "embedded_guidance": 1.0} if kind == "flux" else {}
    generator = Generator.from_teacher(load_teacher(reference))
    save_generator(tmp_path / "generator", generator, reference)
    (tmp_path / "prompts.txt").write_text("a cat\n")
    prompts = ["--prompts", tmp_path / "prompts.txt"] if kind in ("sdxl", "sd3", "flux") else []
    code, output = sample("--generator", tmp_path / "generator", "--count", 2, "--npz", tmp_path / "s.npz", *prompts)
    assert code == 0, output
    images = np.load(tmp_path / "s.npz")["arr_0"]
    assert images.shape[0] == 2 and images.shape[-1] == 3 and not np.array_equal(images[0], images[1])
