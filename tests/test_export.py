"""The `export` command: stock diffusers pipelines that make the generator's own images (DDPM, SD v1.5 here; SDXL,
SD3, FLUX and DiT in test_diffusers_families.py), a k-diffusion generator as a folder load_generator reads, and the
model card."""

import json

import numpy as np
import torch
from test_dvc_repro import save_teacher
from tiny_models import save_tiny_ddpm, save_tiny_stable_diffusion
from typer.testing import CliRunner

from dmd.stages.export import app
from dmdlib.generators.generator import Generator, load_generator, save_generator
from dmdlib.teachers.families import load_teacher
from dmdlib.teachers.loading import teacher_digest
from dmdlib.teachers.prompt_encoders import PromptEncoder


def export(tmp_path, generator, out, *extra):
    (tmp_path / "params.yaml").write_text("distill: {objective: dmd}\n")
    arguments = ["--generator", generator, "--out", out, "--params", tmp_path / "params.yaml", *extra]
    result = CliRunner().invoke(app, [str(a) for a in arguments])
    return result.exit_code, result.output


def saved_generator(tmp_path, reference: dict, sigmas=None) -> Generator:
    teacher = load_teacher(reference)
    generator = Generator.from_teacher(teacher, sigmas)
    save_generator(tmp_path / "generator", generator, reference, teacher_digest(teacher))
    return generator


def test_ddpm_export_is_a_stock_ddpm_pipeline(tmp_path):
    from diffusers import DiffusionPipeline

    generator = saved_generator(tmp_path, {"kind": "diffusers_ddpm", "path": str(save_tiny_ddpm(tmp_path / "ddpm"))})
    code, output = export(tmp_path, tmp_path / "generator", tmp_path / "out")
    assert code == 0, output
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "out")
    assert type(pipeline).__name__ == "DDPMPipeline" and not list((tmp_path / "out").rglob("*.bin"))
    pipeline.set_progress_bar_config(disable=True)
    theirs = pipeline(num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np").images
    z = torch.randn(1, *generator.denoiser.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = (generator(z) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(theirs - ours).max() < 1e-4


def test_stable_diffusion_export_and_its_card(tmp_path):
    from diffusers import DiffusionPipeline

    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    generator = saved_generator(tmp_path, {"kind": "stable_diffusion", "path": str(folder)})
    metrics = {"samples": 10, "sample_sets": 1, "dmd_one_step": {"fid_classifier": 0.26, "images_per_s": 469.0}}
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    code, output = export(tmp_path, tmp_path / "generator", tmp_path / "out", "--metrics", tmp_path / "eval.json")
    assert code == 0, output
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "out")
    pipeline.set_progress_bar_config(disable=True)
    shape = generator.denoiser.sample_shape
    z = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    options = {"num_inference_steps": 1, "guidance_scale": 1.0, "output_type": "latent"}
    theirs = pipeline("a cat", latents=z.clone(), **options).images
    with torch.no_grad():
        ours = generator(z, PromptEncoder(folder, "stable_diffusion", shape)(["a cat"]))
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()

    card = (tmp_path / "out" / "README.md").read_text()
    digest = json.loads((tmp_path / "generator" / "generator.json").read_text())["teacher_digest"]
    assert digest in card and "objective: `dmd`" in card and "- fid_classifier: 0.26" in card
    assert 'pipe("a prompt", num_inference_steps=1, guidance_scale=1.0)' in card

    code, output = export(tmp_path, tmp_path / "generator", tmp_path / "out")
    assert code == 2 and "exists and is not an empty folder" in output  # nothing of it deleted
    saved_generator(tmp_path, {"kind": "stable_diffusion", "path": str(folder)}, sigmas=[14.6, 2.0])
    code, output = export(tmp_path, tmp_path / "generator", tmp_path / "two-step")
    assert code == 2 and "2-step generator has no stock StableDiffusionPipeline form" in output
    assert not (tmp_path / "two-step").exists()


def test_kdiffusion_export_is_a_generator_folder(tmp_path):
    save_teacher(tmp_path / "teacher.safetensors", seed=0)
    generator = saved_generator(tmp_path, {"kind": "kdiffusion", "path": str(tmp_path / "teacher.safetensors")})
    code, output = export(tmp_path, tmp_path / "generator", tmp_path / "out", "--metrics", tmp_path / "none.json")
    assert code == 0, output
    card = (tmp_path / "out" / "README.md").read_text()
    assert "load_generator(folder)" in card and "none.json was not found" in card
    loaded = load_generator(tmp_path / "out")
    for key, value in generator.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
