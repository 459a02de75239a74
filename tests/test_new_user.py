"""What broke when the pipeline was tried as a new user would: stale teachers and checkpoints, lost checkpoints, white
16-bit images, another teacher's generator, tracebacks, outputs found unwritable only after the work, missing
sections."""

import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_kdiffusion
from tiny_project import pipeline_params, run_stages, write_tiny_project
from typer.testing import CliRunner

from dmdlib.data.io import OUTPUT_MARK
from dmdlib.errors import ParamsError, TeacherError
from dmdlib.params import load_params
from dmdlib.teachers.loading import load_kdiffusion, save_kdiffusion


def invoke(app, folder, *args: str):
    """A stage CLI in-process on folder/params.yaml: (exit code, output)."""
    result = CliRunner().invoke(app, ["--params", str(folder / "params.yaml"), *map(str, args)])
    return result.exit_code, result.output


def train_teacher_on_mnist(folder, split_seed: int):
    """prepare (8x8 MNIST, split by `split_seed`) and a 4-step teacher on it; the teacher's weights."""
    from dmd.stages.prepare import app as prepare_app
    from dmd.stages.teacher import app as teacher_app

    (folder / "params.yaml").write_text(
        f"prepare: {{resolution: 8, seed: {split_seed}}}\n"
        "teacher: {kind: train, train: {channels: [8, 8], depths: [1, 1], mapping_width: 8, steps: 4, batch_size: 8, "
        "checkpoint_every: 2, sample_steps: 2}}\n"
    )
    assert invoke(prepare_app, folder, "--out", folder / "data.parquet", "--preview", folder / "data.png")[0] == 0
    code, output = invoke(
        teacher_app,
        folder,
        "--data",
        folder / "data.parquet",
        "--out",
        folder / "teacher",
        "--samples",
        folder / "t.png",
        "--checkpoint",
        folder / "teacher.pt",
        "--live",
        folder / "live",
    )
    assert code == 0, output
    return load_kdiffusion(folder / "teacher" / "model.safetensors").state_dict()


def test_a_new_data_split_trains_the_teacher_anew_on_it(tmp_path, caplog):
    """prepare.seed moved 803 of 1,000 held-out digits into training; the teacher 'resumed' its finished checkpoint."""
    first = train_teacher_on_mnist(tmp_path, split_seed=0)
    with caplog.at_level(logging.WARNING):
        second = train_teacher_on_mnist(tmp_path, split_seed=1)
    assert "made with other settings (train_split:" in caplog.text
    assert any(not torch.equal(first[key], second[key]) for key in first)
    assert (tmp_path / "teacher.pt").exists() and len(list(tmp_path.glob("teacher.*.pt"))) == 1  # the first one, kept
    for checkpoint in tmp_path.glob("teacher*.pt"):
        checkpoint.unlink()  # as in a fresh clone whose outputs were restored (#40: it trained again from step 0)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        third = train_teacher_on_mnist(tmp_path, split_seed=1)
    assert "already holds the teacher of these settings at 4 steps: not trained again" in caplog.text
    assert all(torch.equal(second[key], third[key]) for key in second) and not (tmp_path / "teacher.pt").exists()


def test_checkpoint_claims(tmp_path, caplog):
    """Training longer goes on and a checkpoint of other settings is kept and named."""
    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill"])
    params = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(
        params.replace("  steps: 3\n  batch_size: 2", "  steps: 5\n  batch_size: 2").replace(
            "  sample_every: 2", "  sample_every: 5"
        )
    )
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["distill"])  # more steps, other grids: the same training, which goes on
    assert "resuming distillation from" in caplog.text and "at step 3" in caplog.text
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 5

    (tmp_path / "params.yaml").write_text(params.replace("  steps: 3\n", "  steps: 5\n  generator_lr: 1.0e-3\n", 1))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["distill"])
    first = sorted(tmp_path.glob("ck.*.pt"))  # the 3-step run's last checkpoint, kept when the 5-step run went on
    assert [torch.load(path, weights_only=True)["step"] for path in first] == [3, 5]  # not overwritten: kept, named
    assert f"made with other settings (distill.generator_lr: 0.0003 -> 0.001): kept as {first[1].name}" in caplog.text

    (tmp_path / "params.yaml").write_text(params.replace("  steps: 3\n", "  steps: 6\n", 1))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["distill"])  # back to the first settings: their checkpoint is taken back and goes on
    assert f"taking back {first[1].name}, made with these settings" in caplog.text and "at step 5" in caplog.text
    assert "starting from step 0" not in caplog.text  # #40: not "starting anew" just before "taking back"

    (tmp_path / "params.yaml").write_text(params.replace("  steps: 3\n", "  steps: 4\n", 1))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["distill"])  # #40: fewer steps than the checkpoint: the 3-step run's goes on to 4
    assert (
        "ck.pt was at step 6, past distill.steps = 4" in caplog.text and f"taking back {first[0].name}" in caplog.text
    )
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 4

    from dmd.stages.checkpoints import app as checkpoints_app

    assert len(list(tmp_path.glob("ck.*.pt"))) == 4  # 3 and 5 of the first settings, 5 of the other, 6
    result = CliRunner().invoke(checkpoints_app, ["--folder", str(tmp_path), "--keep", "1"])
    assert result.exit_code == 0 and len(list(tmp_path.glob("ck.*.pt"))) == 1 and (tmp_path / "ck.pt").is_file()


def test_resumed_curves_hold_each_step_once(tmp_path):
    """#40: steps between the last checkpoint and a kill were logged twice after the resume."""
    from dmd.stages.common import open_live

    with open_live(tmp_path / "live", 0) as live:
        for step in range(1, 8):  # killed at step 7, its last checkpoint at step 5
            live.step = step
            live.log_metric("loss", float(step))
            live.log_metric("diversity/spread", float(step))
    with open_live(tmp_path / "live", 5) as live:
        for step in (6, 7):
            live.step = step
            live.log_metric("loss", float(step))
            live.log_metric("diversity/spread", float(step))
    for curve in ("loss.tsv", "diversity/spread.tsv"):
        header, *rows = (tmp_path / "live" / "plots" / "metrics" / curve).read_text().splitlines()
        column = header.split("\t").index("step")
        assert [int(row.split("\t")[column]) for row in rows] == list(range(1, 8)), curve


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path, caplog):
    from dmdlib.data.prepared import load_image_folder

    (tmp_path / "digits").mkdir()
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "digits" / "ramp.png")
    assert Image.open(tmp_path / "digits" / "ramp.png").mode == "I;16"
    folder = load_image_folder(tmp_path / "digits", 8, 1)
    assert np.array_equal(folder.images[0, ..., 0], np.round(ramp / 257).astype(np.uint8))  # 65535 -> 255, not all 255
    assert folder.converted == {"I;16 to L (16-bit values scaled to 8)": 1}
    rgb = load_image_folder(tmp_path / "digits", 8, 3).images[0]
    assert np.array_equal(rgb[..., 0], rgb[..., 2]) and rgb.max() == 255 and rgb.min() == 0


def test_generator_of_another_teacher(tmp_path):
    """Same architecture: metrics were written against the wrong teacher; another one: a 237-line traceback."""
    from dmd.stages.evaluate import app as evaluate_app

    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill"])
    generator = json.loads((tmp_path / "generator" / "generator.json").read_text())
    assert len(generator["teacher_digest"]) == 64
    for other in (tiny_kdiffusion(seed=1), tiny_kdiffusion(widths=(16, 16))):
        save_kdiffusion(tmp_path / "k.safetensors", other, other.config)
        run_stages(tmp_path, ["teacher"])
        code, output = invoke(
            evaluate_app,
            tmp_path,
            "--data",
            tmp_path / "data.parquet",
            "--teacher",
            tmp_path / "teacher",
            "--generator",
            tmp_path / "generator",
            "--classifier",
            tmp_path / "classifier.safetensors",
            "--metrics",
            tmp_path / "eval.json",
            "--images",
            tmp_path / "eval",
        )
        assert code == 2 and output.count("\n") == 1, output
        assert f"generator.json: distilled from teacher {generator['teacher_digest'][:12]}, not from" in output
        assert not (tmp_path / "eval.json").exists()


def test_broken_teacher_files_are_one_line_naming_file_and_keys(tmp_path):
    teacher = tiny_kdiffusion()
    good = tmp_path / "good.safetensors"
    save_kdiffusion(good, teacher, teacher.config)
    broken = {"empty": b"", "truncated": good.read_bytes()[:-100]}
    for name, data in broken.items():
        (tmp_path / f"{name}.safetensors").write_bytes(data)
        with pytest.raises(
            TeacherError, match=rf"{name}.safetensors: not a readable .safetensors file .*download or export"
        ):
            load_kdiffusion(tmp_path / f"{name}.safetensors")
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in teacher.inner_model.state_dict().items()}
    save_file(state, tmp_path / "bad-config.safetensors", metadata={"config": "{not json"})
    with pytest.raises(TeacherError, match=r"bad-config.safetensors: the config in its metadata: not valid JSON"):
        load_kdiffusion(tmp_path / "bad-config.safetensors")
    save_file(
        state, tmp_path / "odd-config.safetensors", metadata={"config": json.dumps({"model": {"type": "image_v1"}})}
    )
    with pytest.raises(
        TeacherError, match=r"odd-config.safetensors: the config in its metadata: not a k-diffusion model config"
    ):
        load_kdiffusion(tmp_path / "odd-config.safetensors")
    with pytest.raises(TeacherError, match=r"teacher.config .*missing.json: not found"):
        load_kdiffusion(good, tmp_path / "missing.json")

    first, second = list(state)[:2]
    state.pop(first)
    state[second] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "keys.safetensors", metadata={"config": json.dumps(teacher.config)})
    with pytest.raises(TeacherError) as wrong:
        load_kdiffusion(tmp_path / "keys.safetensors")
    message = str(wrong.value)
    assert "\n" not in message and f"1 missing ({first})" in message and "1 unexpected (extra.weight)" in message
    assert f"1 of another shape ({second} (3, 3) for" in message


def test_untakeable_resolution(tmp_path):
    """A resolution the teachers network cannot take is one line."""
    from dmd.stages.prepare import app as prepare_app
    from dmd.stages.teacher import app as teacher_app

    (tmp_path / "params.yaml").write_text(
        "prepare: {resolution: 10}\n"
        "teacher: {kind: train,\n"
        "  train: {channels: [8, 8, 8], depths: [1, 1, 1], mapping_width: 8, steps: 2, batch_size: 4}}\n"
    )
    assert invoke(prepare_app, tmp_path, "--out", tmp_path / "data.parquet", "--preview", tmp_path / "data.png")[0] == 0
    code, output = invoke(
        teacher_app,
        tmp_path,
        "--data",
        tmp_path / "data.parquet",
        "--out",
        tmp_path / "teacher",
        "--checkpoint",
        tmp_path / "t.pt",
        "--live",
        tmp_path / "live",
        "--samples",
        tmp_path / "t.png",
    )
    assert code == 2 and output.count("\n") == 1, output
    assert "teacher.train: its network cannot take 1x10x10 inputs" in output
    assert "prepare.resolution 10: use a multiple of 4 for its 3 levels" in output


def test_unwritable_outputs(tmp_path):
    """Outputs that cannot be written stop the stage before its work."""
    from dmd.stages.evaluate import app as evaluate_app

    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs"])
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(AssertionError, match=r"file/generator: cannot be written in .*file \(a file, not a folder\)"):
        _distill_into(tmp_path, tmp_path / "file" / "generator")
    assert not (tmp_path / "ck.pt").exists()  # stopped before training
    code, output = invoke(evaluate_app, tmp_path, "--metrics", tmp_path / "file" / "eval.json")
    assert code == 2 and "eval.json: cannot be written" in output
    # #40: a folder of the user's, or the folder holding the project's other outputs, is refused before training
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my_model.bin").write_text("keep")
    for folder in (tmp_path / "mine", tmp_path):
        with pytest.raises(AssertionError, match="a folder this project did not write"):
            _distill_into(tmp_path, folder)
    assert (tmp_path / "mine" / "my_model.bin").read_text() == "keep" and (tmp_path / "teacher").is_dir()
    assert not (tmp_path / "ck.pt").exists()


def _distill_into(folder, out):
    from dmd.stages.distill import app as distill_app

    code, output = invoke(
        distill_app,
        folder,
        "--teacher",
        folder / "teacher",
        "--pairs",
        folder / "pairs",
        "--data",
        folder / "data.parquet",
        "--classifier",
        folder / "classifier.safetensors",
        "--out",
        out,
        "--samples",
        folder / "grids",
        "--checkpoint",
        folder / "ck.pt",
        "--live",
        folder / "live",
    )
    assert code == 0, output


@pytest.mark.slow
def test_full_disk(tmp_path, repo_root):
    """Writes beyond RLIMIT_FSIZE fail with EFBIG, as on a full or size-limited file system: a pair shard (pyarrow), the
    distillation checkpoint (torch) and, below that, dvclive's start (DVC's sqlite caches)."""
    import resource

    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / OUTPUT_MARK).touch()
    (tmp_path / "pairs" / "shard-00000.parquet").write_bytes(b"an earlier run's shard")

    def run(stage: str, limit: int | None, *args, cwd=tmp_path) -> list[str]:
        def limit_file_size():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        result = subprocess.run(
            [sys.executable, "-m", f"dmd.stages.{stage}", "--params", tmp_path / "params.yaml", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            preexec_fn=limit_file_size if limit else None,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)},
        )
        assert result.returncode == (2 if limit else 0), result.stderr
        return [
            line for line in result.stderr.splitlines() if line.startswith(("error", "Traceback", "Exception", "╭"))
        ]

    run("teacher", None, "--out", tmp_path / "teacher", "--samples", tmp_path / "t.png")
    pairs = tmp_path / "pairs" / "shard-00000.parquet"
    assert run("pairs", 2000, "--teacher", tmp_path / "teacher", "--out", tmp_path / "pairs") == [
        f"error: {pairs}: could not be written (File too large); what was there before is untouched"
    ]
    assert pairs.read_bytes() == b"an earlier run's shard"
    run("pairs", None, "--teacher", tmp_path / "teacher", "--out", tmp_path / "pairs")
    distill = [
        "--teacher",
        tmp_path / "teacher",
        "--pairs",
        tmp_path / "pairs",
        "--data",
        tmp_path / "data.parquet",
        "--out",
        tmp_path / "generator",
        "--samples",
        tmp_path / "grids",
        "--checkpoint",
        tmp_path / "ck.pt",
        "--live",
        tmp_path / "live",
    ]
    assert run("distill", 200_000, *distill) == [  # outside a DVC repository: dvclive opens none
        f"error: {tmp_path / 'ck.pt'}: could not be written (File too large); what was there before is untouched"
    ]
    assert run("distill", 20_000, *distill, cwd=repo_root) == [  # inside one: dvclive opens its caches first
        f"error: {tmp_path / 'live'}: the training log could not start (OperationalError: disk I/O error); free space "
        "on the disk, or make the project folder writable"
    ]


def test_a_full_disk_under_a_library_write_is_one_line(tmp_path, monkeypatch):
    """#40: dvclive's curve write on a full disk gave a 170-line traceback and 21 'Exception ignored' blocks."""
    import errno

    import dvclive

    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs"])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dvclive.Live, "log_metric", full)
    with pytest.raises(AssertionError) as stopped:
        _distill_into(tmp_path, tmp_path / "generator")
    errors = [line for line in str(stopped.value).splitlines() if line.strip().startswith(("error", "Traceback"))]
    assert len(errors) == 1 and "a file could not be written (No space left on device); free space where" in errors[0]


@pytest.mark.parametrize("text", ["", "distill:\n  steps: 3\n"])
def test_missing_section(tmp_path, text):
    """`pairs` run by hand on such a file replaced 4 shards by 2,000 pairs of the library's defaults."""
    from dmd.stages.pairs import app as pairs_app

    (tmp_path / "params.yaml").write_text(text)
    code, output = invoke(pairs_app, tmp_path, "--out", tmp_path / "pairs")
    assert code == 2 and "params.yaml: no `pairs`" in output and "this stage reads pairs, distill" in output
    with pytest.raises(ParamsError, match="no `evaluate`, `pairs` section"):
        load_params(tmp_path / "params.yaml", "evaluate", "pairs")


def test_one_class_and_unlabelled(tmp_path, caplog):
    """One class data warns that its feature fid means little and unlabelled data names the way."""
    from dmd.stages.features import app as features_app
    from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet

    (tmp_path / "params.yaml").write_text("features: {steps: 2, batch_size: 4}\n")
    images = np.zeros((20, 8, 8, 1), np.uint8)
    for labels, names in ((np.zeros(20, int), ["cat"]), (np.full(20, -1), [])):
        write_image_parquet(
            tmp_path / "data.parquet", ImageSet(images, labels, split_train_heldout(20, 0.25, 0), names)
        )
        with caplog.at_level(logging.WARNING):
            code, output = invoke(
                features_app,
                tmp_path,
                "--data",
                tmp_path / "data.parquet",
                "--out",
                tmp_path / "c.safetensors",
                "--metrics",
                tmp_path / "c.json",
            )
        if names:
            assert code == 0 and "one class (cat): a classifier of one class learns nothing" in caplog.text
        else:
            assert code == 2 and "one sub-folder per class" in output and "not instead" in output
