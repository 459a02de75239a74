"""An NVlabs EDM snapshot (VP, class-conditional) and an EDM2 latent one with a tiny VAE, through the stage CLIs:
teacher -> pairs -> distill -> evaluate, on the CPU."""

import json

import pytest
import torch
from tiny_project import pipeline_params, run_stages

from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet
from dmdlib.generators.generator import load_generator
from dmdlib.teachers.loading import load_edm, source_digest

pytestmark = pytest.mark.slow  # end to end: the fast tier (`-m 'not slow'`) leaves these out


def _write_rgb_data(folder, resolution: int = 16, classes: int = 10, count: int = 60) -> None:
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, resolution, resolution, 3), generator=rng, dtype=torch.uint8).numpy()
    write_image_parquet(
        folder / "data.parquet",
        ImageSet(
            images,
            (torch.arange(count) % classes).numpy(),
            split_train_heldout(count, 0.25, 0),
            [str(c) for c in range(classes)],
        ),
    )


def _tiny_vae(folder) -> None:
    """A diffusers AutoencoderKL with 4 latent channels and no downsampling (16x16 latents decode to 16x16 images)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).save_pretrained(folder)


def test_an_edm_snapshot_distils_through_the_stages(nvlabs_fixtures, tmp_path):
    snapshot = nvlabs_fixtures / "edm/songunet-ddpmpp-vp-cond/network-snapshot.pkl"
    _write_rgb_data(tmp_path)
    (tmp_path / "params.yaml").write_text(
        f"teacher:\n  kind: edm\n  path: {snapshot}\n  train:\n    sample_steps: 2\n"
        + pipeline_params("  generator_sigmas: [80.0]\n  gradient_checkpointing: true\n")
    )
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])

    reference = json.loads((tmp_path / "teacher" / "teacher.json").read_text())
    source = reference.pop("source")  # the snapshot's bytes: a snapshot replaced at its path changes this output
    assert reference == {
        "kind": "edm",
        "path": "network.safetensors",
        "config": "network.json",
        "vae": None,
        "encoder": None,
    }
    assert source == source_digest({"path": str(snapshot)})
    generator = load_generator(tmp_path / "generator")
    assert generator.sigmas == [80.0]
    images = generator(torch.randn(3, 3, 16, 16), torch.tensor([0, 4, 9]))
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
    # the generator folder is self-contained, its weights under EDM's own names
    network = load_edm(
        tmp_path / "generator" / "generator.safetensors", tmp_path / "generator" / "network.json"
    ).network
    teacher = load_edm(tmp_path / "teacher" / "network.safetensors", tmp_path / "teacher" / "network.json").network
    assert network.state_dict().keys() == teacher.state_dict().keys()
    assert not all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), teacher.state_dict().values()))
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["teacher"]["nfe"] == 3 and metrics["dmd_one_step"]["nfe"] == 1
    assert (tmp_path / "t.png").is_file() and (tmp_path / "grids" / "final.png").is_file()
    assert _sampled_and_exported(tmp_path).shape == (2, 16, 16, 3)


def _sampled_and_exported(tmp_path):
    """`sample` draws from the generator folder and `export` copies it with its card (no diffusers pipeline for
    EDM); the export loads as the same generator. The sampled images, uint8 [N, H, W, C]."""
    import numpy as np
    from typer.testing import CliRunner

    from dmd.stages.export import app as export_app
    from dmd.stages.sample import app as sample_app

    runner, folder = CliRunner(), str(tmp_path / "generator")
    result = runner.invoke(sample_app, ["--generator", folder, "--count", "2", "--npz", str(tmp_path / "s.npz")])
    assert result.exit_code == 0, result.output
    arguments = ["--generator", folder, "--out", str(tmp_path / "export"), "--params", str(tmp_path / "params.yaml")]
    result = runner.invoke(export_app, [*arguments, "--metrics", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert "load_generator(folder)" in (tmp_path / "export" / "README.md").read_text()
    exported, generator = load_generator(tmp_path / "export"), load_generator(folder)
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), generator.state_dict().values()))
    return np.load(tmp_path / "s.npz")["arr_0"]


def test_edm2_latent_snapshot(nvlabs_fixtures, tmp_path):
    """An edm2 latent snapshot distils in latent space and evaluates decoded images."""
    snapshot = nvlabs_fixtures / "edm2/edm2-latent-tiny/network-snapshot.pkl"
    _write_rgb_data(tmp_path)
    _tiny_vae(tmp_path / "vae")
    params = f"teacher:\n  kind: edm2\n  path: {snapshot}\n  train:\n    sample_steps: 2\n" + pipeline_params()
    (tmp_path / "params.yaml").write_text(params)
    with pytest.raises(AssertionError, match="set teacher.vae to a local diffusers AutoencoderKL folder"):
        run_stages(tmp_path, ["teacher"])
    (tmp_path / "params.yaml").write_text(params.replace("  train:", f"  vae: {tmp_path / 'vae'}\n  train:", 1))
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])

    reference = json.loads((tmp_path / "teacher" / "teacher.json").read_text())
    assert reference["vae"] == str(tmp_path / "vae") and reference["encoder"]["class_name"] == "StabilityVAEEncoder"
    generator = load_generator(tmp_path / "generator")
    assert generator(torch.randn(2, 4, 16, 16), torch.tensor([1, 2])).shape == (2, 4, 16, 16)  # latents
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["dmd_one_step"]["fid_classifier"] > 0  # measured on decoded 16x16 RGB images
    assert (tmp_path / "t.png").is_file() and (tmp_path / "eval" / "comparison.png").is_file()
    assert _sampled_and_exported(tmp_path).shape == (2, 16, 16, 3)  # decoded by the snapshot's VAE
