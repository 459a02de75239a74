"""The `teacher` stage: resumable training of the default teacher, and every import kind from its real layout."""

import json

import pytest
import torch
from tiny_models import TINY_KDIFFUSION, save_tiny_ddpm, save_tiny_stable_diffusion, tiny_kdiffusion
from tiny_project import Killed, kill_at
from typer.testing import CliRunner

from dmd.stages.teacher import app
from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet
from dmdlib.params import TeacherTrainParams
from dmdlib.teachers.loading import load_kdiffusion, save_kdiffusion
from dmdlib.teachers.reference import read_teacher
from dmdlib.teachers.training import train_teacher


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    labels = torch.randint(0, 3, (32,))
    params = TeacherTrainParams(**TINY_KDIFFUSION, steps=6, checkpoint_every=3, batch_size=4, warmup_steps=2)

    uninterrupted = train_teacher(tiny_kdiffusion(), images, labels, params, tmp_path / "a.pt", {"run": "fp"})

    with pytest.raises(Killed):
        train_teacher(tiny_kdiffusion(), images, labels, params, tmp_path / "b.pt", {"run": "fp"}, on_step=kill_at(3))
    seen = []
    resumed = train_teacher(
        tiny_kdiffusion(),
        images,
        labels,
        params,
        tmp_path / "b.pt",
        {"run": "fp"},
        on_step=lambda step, loss: seen.append(step),
    )
    assert seen == [4, 5, 6]  # continued from the checkpoint, not from scratch
    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name  # same machine and threads: bitwise equal


def test_checkpoint_of_other_params_is_ignored(tmp_path):
    images, labels = torch.rand(16, 1, 8, 8) * 2 - 1, torch.randint(0, 3, (16,))
    params = TeacherTrainParams(**TINY_KDIFFUSION, steps=2, checkpoint_every=1, batch_size=4)
    train_teacher(tiny_kdiffusion(), images, labels, params, tmp_path / "c.pt", {"run": "old"})
    seen = []
    train_teacher(
        tiny_kdiffusion(),
        images,
        labels,
        params,
        tmp_path / "c.pt",
        {"run": "new"},
        on_step=lambda step, _loss: seen.append(step),
    )
    assert seen == [1, 2]


def test_kdiffusion_checkpoints_round_trip(tmp_path):
    denoiser = tiny_kdiffusion()
    config = denoiser.config
    x, sigma, labels = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 20.0]), torch.tensor([0, 2])
    with torch.no_grad():
        expected = denoiser(x, sigma, labels)
        save_kdiffusion(tmp_path / "model.safetensors", denoiser, config)  # config in the file's metadata
        assert torch.equal(load_kdiffusion(tmp_path / "model.safetensors")(x, sigma, labels), expected)
        # k-diffusion train.py layout: a .pth dict with 'model' and 'model_ema', config as separate JSON.
        torch.save(
            {"model": denoiser.inner_model.state_dict(), "model_ema": denoiser.inner_model.state_dict(), "step": 7},
            tmp_path / "ckpt.pth",
        )
        (tmp_path / "config.json").write_text(json.dumps(config))
        loaded = load_kdiffusion(tmp_path / "ckpt.pth", tmp_path / "config.json")
        assert torch.equal(loaded(x, sigma, labels), expected)
    assert loaded.sample_shape == (1, 8, 8) and loaded.num_classes == 3


def run_stage(tmp_path, params_text, *extra):
    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    out = tmp_path / "teacher"
    result = CliRunner().invoke(
        app,
        [
            "--params",
            str(params),
            "--out",
            str(out),
            "--samples",
            str(tmp_path / "samples.png"),
            "--checkpoint",
            str(tmp_path / "ck.pt"),
            "--live",
            str(tmp_path / "live"),
            *extra,
        ],
    )
    return result, out


@pytest.mark.parametrize("kind", ["diffusers_ddpm", "stable_diffusion", "kdiffusion"])
def test_each_import_kind_loads_from_its_real_layout(tmp_path, kind):
    if kind == "diffusers_ddpm":
        path = save_tiny_ddpm(tmp_path / "ddpm")
    elif kind == "stable_diffusion":
        path = save_tiny_stable_diffusion(tmp_path / "sd")
    else:
        denoiser = tiny_kdiffusion()
        path = tmp_path / "k.safetensors"
        save_kdiffusion(path, denoiser, denoiser.config)
    text = f"teacher:\n  kind: {kind}\n  path: {path}\n  train:\n    sample_steps: 2\n"
    result, out = run_stage(tmp_path, text)
    assert result.exit_code == 0, result.output
    teacher, reference = read_teacher(out)
    assert reference.kind == kind
    x = torch.randn(2, *teacher.sample_shape)
    assert teacher(x, teacher.sigma_max, None if kind != "stable_diffusion" else torch.randn(2, 5, 12)).shape == x.shape
    assert not any(p.requires_grad for p in teacher.parameters())
    assert (tmp_path / "samples.png").exists() == (kind in ("diffusers_ddpm", "kdiffusion"))


@pytest.mark.parametrize("kind", ["diffusers_ddpm", "stable_diffusion", "kdiffusion"])
def test_missing_or_malformed_teacher_path_is_named(tmp_path, kind):
    missing = tmp_path / "nowhere"
    result, out = run_stage(tmp_path, f"teacher:\n  kind: {kind}\n  path: {missing}\n")
    assert result.exit_code == 2
    assert str(missing) in result.output and "beforehand" in result.output
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result, _ = run_stage(tmp_path, f"teacher:\n  kind: {kind}\n  path: {empty}\n")
    assert result.exit_code == 2 and str(empty) in result.output


def test_kind_needs_path(tmp_path):
    result, _ = run_stage(tmp_path, "teacher:\n  kind: diffusers_ddpm\n")
    assert result.exit_code == 2 and "teacher: kind 'diffusers_ddpm' needs `path`" in result.output


def test_train_kind_end_to_end_and_repeatable(tmp_path):
    data = ImageSet(
        images=torch.randint(0, 256, (40, 8, 8, 1), dtype=torch.uint8).numpy(),
        labels=(torch.arange(40) % 2).numpy(),
        split=split_train_heldout(40, 0.25, 0),
        class_names=["a", "b"],
    )
    write_image_parquet(tmp_path / "data.parquet", data)
    text = (
        "teacher:\n  train:\n    channels: [8, 8]\n    depths: [1, 1]\n    mapping_width: 16\n    steps: 4\n"
        "    batch_size: 4\n    checkpoint_every: 2\n    sample_steps: 2\n"
    )
    result, out = run_stage(tmp_path, text, "--data", str(tmp_path / "data.parquet"))
    assert result.exit_code == 0, result.output
    teacher, reference = read_teacher(out)
    assert reference.as_json() == {
        "kind": "kdiffusion",
        "path": str(out / "model.safetensors"),
        "config": None,
        "trained": {"fingerprint": reference.trained["fingerprint"], "steps": 4},
    }
    assert teacher.num_classes == 2 and teacher.sample_shape == (1, 8, 8)
    assert (tmp_path / "samples.png").exists()
    (tmp_path / "again").mkdir()
    _, again = run_stage(tmp_path / "again", text, "--data", str(tmp_path / "data.parquet"))
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()  # seeded init
