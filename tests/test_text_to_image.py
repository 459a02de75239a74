"""Text-to-image end to end on a tiny random Stable Diffusion saved in diffusers layout:
prompts -> latent pairs -> distill -> export -> one-step diffusers pipeline, through the stages' own CLIs."""

import json

import pytest
import torch
from tiny_models import save_tiny_clip, save_tiny_stable_diffusion
from typer.testing import CliRunner

from dmd.stages.distill import app as distill_app
from dmd.stages.evaluate import app as evaluate_app
from dmd.stages.pairs import app as pairs_app
from dmd.stages.prompts import app as prompts_app
from dmd.stages.teacher import app as teacher_app
from dmdlib.data.prompts import load_prompt_set
from dmdlib.generators.generator import load_generator
from dmdlib.teachers.prompt_encoders import PromptEncoder
from dmdlib.teachers.reference import read_teacher
from dmdlib.training.pairs import PairReader, pair_metadata


@pytest.mark.slow
def test_prompts_to_one_step_pipeline(tmp_path):
    from diffusers import AutoencoderTiny

    sd = save_tiny_stable_diffusion(tmp_path / "sd")
    AutoencoderTiny(
        encoder_block_out_channels=(8,),
        decoder_block_out_channels=(8,),
        num_encoder_blocks=(1,),
        num_decoder_blocks=(1,),
        latent_channels=4,
    ).save_pretrained(tmp_path / "taesd")
    (tmp_path / "prompts.txt").write_text("a cat\na dog\nred car\nblue sky\ngreen tree\n")
    (tmp_path / "params.yaml").write_text(
        f"teacher:\n  kind: stable_diffusion\n  path: {sd}\n"
        f"prompts:\n  file: {tmp_path / 'prompts.txt'}\n  eval_fraction: 0.2\n"
        "pairs:\n  count: 4\n  shard_size: 2\n  batch_size: 2\n  sampler: PNDMScheduler\n  steps: 3\n  guidance: 3.0\n"
        "distill:\n  steps: 2\n  batch_size: 2\n  reg_batch_size: 2\n  regression_loss: l2\n  sample_every: 2\n"
        f"  gradient_checkpointing: true\n  preview_vae: {tmp_path / 'taesd'}\n  regression_space: decoded\n"
        "evaluate:\n  samples: 3\n  sample_sets: 1\n  speed_batch_size: 2\n  speed_repeats: 1\n"
        f"  clip_model: {save_tiny_clip(tmp_path / 'clip')}\n"
    )
    p = lambda name: str(tmp_path / name)
    runner = CliRunner()
    for app, args in [
        (teacher_app, ["--out", p("teacher"), "--samples", p("t.png")]),
        (prompts_app, ["--teacher", p("teacher"), "--out", p("prompts")]),
        (pairs_app, ["--teacher", p("teacher"), "--prompts", p("prompts"), "--out", p("pairs")]),
        (
            distill_app,
            [
                "--teacher",
                p("teacher"),
                "--prompts",
                p("prompts"),
                "--pairs",
                p("pairs"),
                "--out",
                p("generator"),
                "--samples",
                p("grids"),
                "--checkpoint",
                p("ck.pt"),
                "--live",
                p("live"),
            ],
        ),
        (
            evaluate_app,
            [
                "--teacher",
                p("teacher"),
                "--prompts",
                p("prompts"),
                "--generator",
                p("generator"),
                "--metrics",
                p("eval.json"),
                "--images",
                p("eval"),
            ],
        ),
    ]:
        result = runner.invoke(app, ["--params", p("params.yaml"), *args])
        assert result.exit_code == 0, result.output

    prompts, _ = load_prompt_set(tmp_path / "prompts")
    assert len(prompts.train) == 4 and len(prompts.eval) == 1
    teacher, _ = read_teacher(tmp_path / "teacher")
    from dmdlib.params import PairsParams

    pair_params = PairsParams(count=4, shard_size=2, batch_size=2, sampler="PNDMScheduler", steps=3, guidance=3.0)
    pairs = PairReader(tmp_path / "pairs", pair_metadata(teacher, pair_params, prompts.train))
    assert pairs.batch(torch.arange(4))[1].shape == (4, 4, 8, 8)  # latents, not pixels
    import pyarrow.parquet as pq

    shard = pq.read_table(tmp_path / "pairs" / "shard-00000.parquet")
    assert [prompts.train[i] for i in shard.column("label").to_pylist()] == shard.column("prompt").to_pylist()
    assert (tmp_path / "grids" / "final.png").exists()  # decoded through the tiny preview VAE
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for model in ("teacher", "dmd_one_step"):
        # no reference folder: no FID, not a placeholder
        assert set(metrics[model]) == {"nfe", "clip_score", "images_per_s", "peak_memory_mib"}
        assert 0 <= metrics[model]["clip_score"] <= 100
    # counted: PNDM's 3 steps run the UNet 4 times (its PLMS start repeats one), twice each for guidance
    assert metrics["teacher"]["nfe"] == 8 and metrics["dmd_one_step"]["nfe"] == 1
    (tmp_path / "sets.yaml").write_text(
        (tmp_path / "params.yaml").read_text().replace("sample_sets: 1", "sample_sets: 2")
    )
    result = runner.invoke(
        evaluate_app,
        [
            "--params",
            p("sets.yaml"),
            "--teacher",
            p("teacher"),
            "--prompts",
            p("prompts"),
            "--generator",
            p("generator"),
            "--metrics",
            p("eval2.json"),
            "--images",
            p("eval2"),
        ],
    )
    assert (
        result.exit_code != 0
        and "evaluate.sample_sets is 2" in result.output
        and not (tmp_path / "eval2.json").exists()
    )

    # The exported UNet runs in a stock diffusers pipeline with a one-step DDIM schedule at t = 999,
    # and gives exactly what the generator gives.
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    pipeline = StableDiffusionPipeline.from_pretrained(
        sd,
        unet=UNet2DConditionModel.from_pretrained(tmp_path / "generator" / "unet"),
        scheduler=DDIMScheduler.from_pretrained(
            sd, subfolder="scheduler", timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False
        ),
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    latents = pipeline(
        "a cat", num_inference_steps=1, guidance_scale=1.0, latents=z.clone(), output_type="latent"
    ).images
    generator = load_generator(tmp_path / "generator")
    with torch.no_grad():
        ours = generator(z, PromptEncoder(sd, "stable_diffusion", (4, 8, 8))(["a cat"]))
    assert torch.allclose(latents, ours, atol=1e-4)
    image = pipeline("a cat", num_inference_steps=1, guidance_scale=1.0, output_type="np").images
    assert image.shape == (1, 8, 8, 3)
