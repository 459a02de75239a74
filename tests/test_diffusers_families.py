"""SDXL, DiT, SD3 and FLUX end to end: a tiny random model of each family's real classes, saved with the family's own
`save_pretrained`, through the stage CLIs (prompts or classes -> pairs -> distill), then the exported network in the
family's stock diffusers pipeline with a one-step schedule, matching the generator."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import (
    save_tiny_clip,
    save_tiny_cogvideox,
    save_tiny_dit,
    save_tiny_flux,
    save_tiny_ltx,
    save_tiny_sd3,
    save_tiny_sdxl,
    save_tiny_wan,
)
from typer.testing import CliRunner

from dmd.stages.distill import app as distill_app
from dmd.stages.evaluate import app as evaluate_app
from dmd.stages.export import app as export_app
from dmd.stages.pairs import app as pairs_app
from dmd.stages.prompts import app as prompts_app
from dmd.stages.sample import app as sample_app
from dmd.stages.teacher import app as teacher_app
from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet
from dmdlib.data.prompts import load_prompt_set
from dmdlib.generators.generator import load_generator
from dmdlib.params import EvaluateParams
from dmdlib.teachers.latents import LatentDecoder, load_vae
from dmdlib.teachers.prompt_encoders import PromptEncoder
from dmdlib.teachers.reference import guided, read_teacher

DISTILL = (
    "distill:\n  steps: 2\n  batch_size: 2\n  reg_batch_size: 2\n  regression_loss: l2\n  regression_space: latent\n"
    "  sample_every: 2\n  checkpoint_every: 2\n  gradient_checkpointing: true\n"
)
FAMILIES = {  # kind: (builder, teacher lines, pairs sampler, pairs guidance)
    "sdxl": (save_tiny_sdxl, "", "EulerDiscreteScheduler", 3.0),
    "sd3": (save_tiny_sd3, "", "FlowMatchEulerDiscreteScheduler", 3.0),
    "flux": (save_tiny_flux, "  resolution: 16\n  embedded_guidance: 1.0\n", "FlowMatchEulerDiscreteScheduler", 3.5),
}
ONE_STEP_TIME = [0.999]  # the flow generator's time before the shift: 1 - 1 / num_train_timesteps


def _run(tmp_path, stages):
    runner = CliRunner()
    for app, args in stages:
        result = runner.invoke(app, ["--params", str(tmp_path / "params.yaml"), *map(str, args)])
        assert result.exit_code == 0, result.output


def _distil(tmp_path, kind: str, folder, teacher_lines: str, pairs_lines: str, text: bool, data=None):
    (tmp_path / "params.yaml").write_text(
        f"teacher:\n  kind: {kind}\n  path: {folder}\n{teacher_lines}"
        f"prompts:\n  file: {tmp_path / 'prompts.txt'}\n  eval_fraction: 0.2\n" + pairs_lines + DISTILL
    )
    (tmp_path / "prompts.txt").write_text("a cat\na dog\nred car\nblue sky\ngreen tree\n")
    t, extra = tmp_path / "teacher", (["--prompts", tmp_path / "prompts"] if text else ["--data", data])
    _run(
        tmp_path,
        [
            (teacher_app, ["--out", t, "--samples", tmp_path / "t.png"]),
            *([(prompts_app, ["--teacher", t, "--out", tmp_path / "prompts"])] if text else []),
            (pairs_app, ["--teacher", t, "--out", tmp_path / "pairs", *(extra if text else [])]),
            (
                distill_app,
                [
                    "--teacher",
                    t,
                    "--pairs",
                    tmp_path / "pairs",
                    "--out",
                    tmp_path / "generator",
                    "--samples",
                    tmp_path / "grids",
                    "--checkpoint",
                    tmp_path / "ck.pt",
                    "--live",
                    tmp_path / "live",
                    *extra,
                ],
            ),
        ],
    )
    assert (tmp_path / "grids" / "final.png").is_file()  # decoded with the family's own VAE
    return load_generator(tmp_path / "generator")


def _exported(tmp_path):
    """The `export` command's pipeline folder of tmp_path's generator, loaded by diffusers alone."""
    from diffusers import DiffusionPipeline

    _run(tmp_path, [(export_app, ["--generator", tmp_path / "generator", "--out", tmp_path / "export"])])
    return DiffusionPipeline.from_pretrained(tmp_path / "export")


@pytest.mark.parametrize("kind", FAMILIES)
def test_text_to_image_family_export(tmp_path, kind):
    """A text to image family distils and its export runs in the stock pipeline."""
    import diffusers

    build, teacher_lines, sampler, guidance = FAMILIES[kind]
    folder = build(tmp_path / kind)
    pairs_lines = "pairs:\n  count: 4\n  shard_size: 2\n  batch_size: 2\n"
    pairs_lines += f"  sampler: {sampler}\n  steps: 3\n  guidance: {guidance}\n"
    generator = _distil(tmp_path, kind, folder, teacher_lines, pairs_lines, text=True)

    index = json.loads((folder / "model_index.json").read_text())
    network_folder = "unet" if kind == "sdxl" else "transformer"
    pipeline = _exported(tmp_path)
    assert type(pipeline).__name__ == index["_class_name"]
    network = getattr(pipeline, network_folder)
    pipeline.set_progress_bar_config(disable=True)
    shape = generator.denoiser.sample_shape
    z = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = generator(z, PromptEncoder(folder, kind, shape)(["a cat"]))
    options = {"num_inference_steps": 1, "output_type": "latent", "guidance_scale": 1.0}
    if kind == "sdxl":
        theirs = pipeline("a cat", latents=z.clone(), **options).images
    else:
        packed = pipeline._pack_latents(z.clone(), 1, shape[0], shape[1], shape[2]) if kind == "flux" else z.clone()
        theirs = pipeline(
            "a cat", latents=packed, sigmas=ONE_STEP_TIME, height=shape[1], width=shape[2], **options
        ).images
        ours = pipeline._pack_latents(ours, 1, shape[0], shape[1], shape[2]) if kind == "flux" else ours
    assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()

    # The real denoiser guides as the pipeline does (SDXL: zero negative embeddings; SD3: the empty prompt's; FLUX:
    # the scale through its guidance embedding): one guided teacher step equals the pipeline's at guidance_scale.
    teacher, reference = read_teacher(tmp_path / "teacher")
    real = guided(teacher, load_prompt_set(tmp_path / "prompts")[0].uncond, guidance)
    pipeline = getattr(diffusers, index["_class_name"]).from_pretrained(folder, scheduler=pipeline.scheduler)
    pipeline.set_progress_bar_config(disable=True)
    options["guidance_scale"] = guidance
    with torch.no_grad():
        ours = real(
            z * teacher.prior_scale(generator.sigma), generator.sigma, PromptEncoder(folder, kind, shape)(["a cat"])
        )
    if kind == "sdxl":
        theirs = pipeline("a cat", latents=z.clone(), **options).images
    else:
        theirs = pipeline(
            "a cat", latents=packed, sigmas=ONE_STEP_TIME, height=shape[1], width=shape[2], **options
        ).images
        ours = pipeline._pack_latents(ours, 1, shape[0], shape[1], shape[2]) if kind == "flux" else ours
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()
    teacher_network = getattr(diffusers, index[network_folder][1]).from_pretrained(folder, subfolder=network_folder)
    assert not all(
        torch.equal(a, b) for a, b in zip(network.state_dict().values(), teacher_network.state_dict().values())
    )


def test_dit_export(tmp_path):
    """Dit distils class conditionally and its export runs in the stock dit pipeline."""
    from diffusers import DiTPipeline

    folder = save_tiny_dit(tmp_path / "dit")
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 8, 8, 3), generator=rng, dtype=torch.uint8).numpy()
    write_image_parquet(
        tmp_path / "data.parquet",
        ImageSet(
            images, (torch.arange(40) % 10).numpy(), split_train_heldout(40, 0.25, 0), [str(c) for c in range(10)]
        ),
    )
    pairs_lines = (
        "pairs:\n  count: 4\n  shard_size: 2\n  batch_size: 2\n  sampler: DDIMScheduler\n  steps: 3\n  guidance: 2.0\n"
    )
    generator = _distil(
        tmp_path,
        "dit",
        folder,
        "  train:\n    sample_steps: 2\n",
        pairs_lines,
        text=False,
        data=tmp_path / "data.parquet",
    )
    assert generator.sigma < generator.denoiser.sigma_max  # epsilon DiT: starts where its x0 is well conditioned

    pipeline = _exported(tmp_path)
    assert isinstance(pipeline, DiTPipeline)
    pipeline.set_progress_bar_config(disable=True)
    labels = [1, 7]
    theirs = pipeline(
        labels, guidance_scale=1.0, num_inference_steps=1, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    z = torch.randn(2, *generator.denoiser.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = LatentDecoder.diffusers(load_vae(folder))(generator(z, torch.tensor(labels)))
    ours = ((ours + 1) / 2).permute(0, 2, 3, 1).numpy()
    assert abs(theirs - ours).max() < 1e-4


@pytest.mark.parametrize("case", ["other pipeline", "other family", "video family", "no index"])
def test_unknown_teacher_folder(tmp_path, case):
    """A teacher folder the project does not know stops with one error naming it."""
    folder = tmp_path / "model"
    if case == "other family":
        save_tiny_dit(folder)
    elif case == "video family":
        save_tiny_wan(folder)
    else:
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"")
        if case == "other pipeline":
            (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    (tmp_path / "params.yaml").write_text(f"teacher:\n  kind: sdxl\n  path: {folder}\n")
    result = CliRunner().invoke(teacher_app, ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "t")])
    assert result.exit_code != 0 and str(folder) in result.output
    expected = {
        "other pipeline": "KandinskyV22Pipeline",
        "other family": "set teacher.kind: dit",
        "video family": "set teacher.kind: wan",
        "no index": "no model_index.json",
    }
    assert expected[case] in result.output and "StableDiffusionXLPipeline" in result.output
    if case not in ("other family", "video family"):
        assert "flux (FluxPipeline)" in result.output  # the kinds supported
    assert not (tmp_path / "t").exists()


def test_dit_guidance_is_the_pipelines_own_on_its_null_class(tmp_path):
    """DiTPipeline guides the epsilon half with null class 1000; the GuidedDenoiser on D does the same, being linear."""
    from diffusers import DiTPipeline

    from dmdlib.generators.generator import start_sigma
    from dmdlib.teachers.diffusers import one_step_scheduler
    from dmdlib.teachers.families import load_teacher

    folder = save_tiny_dit(tmp_path / "dit", num_classes=1000)
    teacher = load_teacher({"kind": "dit", "path": str(folder)})
    sigma = start_sigma(teacher)
    pipeline = DiTPipeline.from_pretrained(folder, scheduler=one_step_scheduler(teacher, sigma))
    pipeline.set_progress_bar_config(disable=True)
    theirs = pipeline(
        [3, 999],
        guidance_scale=4.0,
        num_inference_steps=1,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    z = torch.randn(2, *teacher.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = guided(teacher, teacher.uncond, 4.0)(z * teacher.prior_scale(sigma), sigma, torch.tensor([3, 999]))
        ours = ((LatentDecoder.diffusers(load_vae(folder))(ours) + 1) / 2).permute(0, 2, 3, 1).numpy()
    assert abs(theirs - ours).max() < 1e-4


VIDEO_FAMILIES = {  # kind: (builder, teacher lines, pairs sampler)
    "wan": (save_tiny_wan, "  resolution: 32\n  frames: 9\n", "FlowMatchEulerDiscreteScheduler"),
    "cogvideox": (save_tiny_cogvideox, "  resolution: 32\n  frames: 9\n", "CogVideoXDDIMScheduler"),
    "ltx": (save_tiny_ltx, "  resolution: 32\n  frames: 9\n", "FlowMatchEulerDiscreteScheduler"),
}


@pytest.mark.parametrize("kind", VIDEO_FAMILIES)
def test_video_family_distils_and_exports(tmp_path, kind):
    """A video family distils one step through the stage CLIs on video latents, and its export, in the stock
    pipeline with its one-step scheduler, makes the generator's clip from the same noise and prompt; the real
    denoiser guides as the pipeline does."""
    import diffusers

    build, teacher_lines, sampler = VIDEO_FAMILIES[kind]
    folder = build(tmp_path / kind)
    pairs_lines = "pairs:\n  count: 4\n  shard_size: 2\n  batch_size: 2\n"
    pairs_lines += f"  sampler: {sampler}\n  steps: 3\n  guidance: 3.0\n"
    generator = _distil(tmp_path, kind, folder, teacher_lines, pairs_lines, text=True)
    shape = generator.denoiser.sample_shape
    assert len(shape) == 4  # one clip's latents

    pipeline = _exported(tmp_path)
    assert type(pipeline).__name__ == json.loads((folder / "model_index.json").read_text())["_class_name"]
    pipeline.set_progress_bar_config(disable=True)
    frames, height, width = generator.denoiser.video_size
    z = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    options = {"num_inference_steps": 1, "output_type": "latent", "num_frames": frames, "height": height}
    options["width"] = width
    pack = pipeline._pack_latents if kind == "ltx" else lambda latents: latents  # LTX takes tokens
    with torch.no_grad():
        ours = pack(generator(z, PromptEncoder(folder, kind, shape)(["a cat"])))
    theirs = pipeline("a cat", latents=pack(z.clone()), guidance_scale=1.0, **options).frames
    assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()

    teacher, _ = read_teacher(tmp_path / "teacher")
    real = guided(teacher, load_prompt_set(tmp_path / "prompts")[0].uncond, 3.0)
    pipeline = getattr(diffusers, type(pipeline).__name__).from_pretrained(folder, scheduler=pipeline.scheduler)
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():
        cond = PromptEncoder(folder, kind, shape)(["a cat"])
        ours = pack(real(z * teacher.prior_scale(generator.sigma), generator.sigma, cond))
    theirs = pipeline("a cat", latents=pack(z.clone()), guidance_scale=3.0, **options).frames
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()

    # evaluate scores every frame against its clip's prompt; sample writes clips as strips, GIFs and [N, F, H, W, C]
    evaluate = "evaluate:\n  samples: 2\n  sample_sets: 1\n  speed_batch_size: 1\n  speed_repeats: 1\n"
    evaluate += f"  clip_model: {save_tiny_clip(tmp_path / 'clip')}\n"
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text() + evaluate)
    generator_folder = ["--generator", tmp_path / "generator"]
    prompts_file = ["--prompts", tmp_path / "prompts.txt"]
    evaluate_options = ["--teacher", tmp_path / "teacher", "--prompts", tmp_path / "prompts", "--metrics"]
    _run(tmp_path, [(evaluate_app, [*generator_folder, *evaluate_options, tmp_path / "eval.json"])])
    for output in (["--png-dir", tmp_path / "clips"], ["--npz", tmp_path / "clips.npz"]):
        result = CliRunner().invoke(
            sample_app, list(map(str, [*generator_folder, *prompts_file, "--count", 2, *output]))
        )
        assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= metrics["dmd_one_step"]["clip_score"] <= 100 and metrics["dmd_one_step"]["nfe"] == 1
    assert metrics["teacher"]["nfe"] == 6  # 3 Euler steps, each guided (two passes)
    assert np.load(tmp_path / "clips.npz")["arr_0"].shape == (2, frames, height, width, 3)
    with Image.open(tmp_path / "clips" / f"{EvaluateParams().first_seed:08d}.gif") as gif:
        assert gif.n_frames == frames and gif.size == (width, height)


@pytest.mark.parametrize("kind", ["wan", "ltx"])
def test_video_flow_teachers_shift_their_times_as_their_pipelines_do(tmp_path, kind):
    """The flow video teachers' noise times are their stock pipelines' own at 8 steps: Wan's UniPC with its
    flow_shift, LTX-Video's Euler shifted by the mu LTXPipeline computes from the clip's token count."""
    import numpy as np
    from diffusers import LTXPipeline, WanPipeline

    from dmdlib.denoisers.flow import shift_times
    from dmdlib.teachers.families import load_teacher

    build, teacher_lines, _ = VIDEO_FAMILIES[kind]
    folder = build(tmp_path / kind)
    teacher = load_teacher({"kind": kind, "path": str(folder), "resolution": 32, "frames": 9})
    pipeline = (WanPipeline if kind == "wan" else LTXPipeline).from_pretrained(folder)
    steps, unshifted = 8, np.linspace(1.0, 1 / 8, 8)
    if kind == "wan":  # UniPC's flow sigmas: from 1 to 1 / 1000 in steps + 1 points, the last left out
        pipeline.scheduler.set_timesteps(steps)
        theirs = pipeline.scheduler.sigmas[1:-1]  # the first is moved off 1 by 1e-6
        unshifted = np.linspace(1.0, 1 / 1000, steps + 1)[1:-1]
    else:
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        config = pipeline.scheduler.config
        tokens = int(np.prod(teacher.sample_shape[1:]))
        mu = calculate_shift(
            tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift
        )
        pipeline.scheduler.set_timesteps(sigmas=unshifted, mu=mu)
        theirs = pipeline.scheduler.sigmas[:-1]
    ours = shift_times(torch.tensor(unshifted, dtype=torch.float64), teacher.shift)
    assert torch.allclose(theirs.double(), ours, atol=1e-5), (theirs, ours)
