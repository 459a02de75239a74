"""User errors are the project's own types and print as one line; anything else is a bug and keeps its traceback."""

import pytest
import typer

from dmd.stages.common import user_errors
from dmdlib.errors import DataError, DivergedError, DmdError, MissingWeightsError, PairsError, ParamsError, TeacherError


@pytest.mark.parametrize(
    "error", [ParamsError, DataError, TeacherError, PairsError, MissingWeightsError, DivergedError]
)
def test_project_errors_print_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.delenv("DMD_TRACEBACK", raising=False)
    assert issubclass(error, DmdError)
    with pytest.raises(typer.Exit) as info, user_errors():
        raise error("data.parquet: what is wrong and what to do")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == "error: data.parquet: what is wrong and what to do\n"


@pytest.mark.parametrize("error", [ValueError, FileNotFoundError, FloatingPointError, KeyError])
def test_other_errors_are_bugs_and_keep_their_traceback(error):
    with pytest.raises(error), user_errors():
        raise error("a programming bug")


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("DMD_TRACEBACK", "1")
    with pytest.raises(ParamsError), user_errors():
        raise ParamsError("params.yaml: distill.steps: ...")


def test_pickled_payload_refused(tmp_path):
    """A .pth that would run code is refused by the weights-only load; the user gets one line, not torch's
    advice to retry with weights_only=False."""
    import os

    import torch

    from dmdlib.teachers.loading import load_kdiffusion

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    torch.save({"model_ema": Payload()}, tmp_path / "bad.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError) as refused:
        load_kdiffusion(tmp_path / "bad.pth")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'bad.pth'}: not a weights-only checkpoint: it refers to posix.system")
    assert (
        "\n" not in message
        and "weights_only=False" in message
        and "never" in message
        and not (tmp_path / "ran").exists()
    )
    with pytest.raises(TeacherError, match="garbage.pth: not a weights-only checkpoint: not a file of tensors"):
        load_kdiffusion(tmp_path / "garbage.pth")


def test_teacher_data_shape_mismatch(tmp_path):
    """A 1-channel 8x8 teacher with 3-channel 8x8 data: one error naming both, and no checkpoint or output written."""
    import torch
    from tiny_models import tiny_kdiffusion
    from tiny_project import pipeline_params, run_stages, write_tiny_project

    from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet

    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs"])
    rgb = torch.randint(0, 256, (60, 8, 8, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    write_image_parquet(
        tmp_path / "data.parquet",
        ImageSet(rgb, (torch.arange(60) % 3).numpy(), split_train_heldout(60, 0.25, 0), ["a", "b", "c"]),
    )
    for stage in ("distill", "evaluate"):
        with pytest.raises(AssertionError) as stopped:
            run_stages(tmp_path, [stage])
        assert (
            f"teacher {tmp_path / 'teacher'} makes 1x8x8 images (3 classes), but {tmp_path / 'data.parquet'} holds "
            "3x8x8 images (3 classes)"
        ) in str(stopped.value)
    assert (
        not (tmp_path / "ck.pt").exists()
        and not (tmp_path / "generator").exists()
        and not (tmp_path / "eval.json").exists()
    )
    from typer.testing import CliRunner

    from dmd.stages.teacher import app as teacher_app

    before = (tmp_path / "teacher" / "teacher.json").read_bytes()
    arguments = ["--params", tmp_path / "params.yaml", "--data", tmp_path / "data.parquet"]
    arguments += ["--out", tmp_path / "teacher"]
    arguments += ["--samples", tmp_path / "t.png"]
    result = CliRunner().invoke(teacher_app, list(map(str, arguments)))
    assert result.exit_code == 2 and f"teacher {tmp_path / 'k.safetensors'} makes 1x8x8 images" in result.output
    assert (tmp_path / "teacher" / "teacher.json").read_bytes() == before  # #40: caught at `teacher`, nothing replaced


def test_second_run_stops(tmp_path):
    """Two distill (or pairs) runs on one checkpoint (folder) used to both run and overwrite each other."""
    import os

    from tiny_models import tiny_kdiffusion
    from tiny_project import pipeline_params, run_stages, write_tiny_project

    from dmdlib.data.io import single_writer

    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs"])
    for stage, path in (("pairs", tmp_path / "pairs"), ("distill", tmp_path / "ck.pt")):
        with single_writer(path):  # the first run, still going
            with pytest.raises(AssertionError) as second:
                run_stages(tmp_path, [stage])
            assert f"{path}: in use by process {os.getpid()}" in str(second.value)
    run_stages(tmp_path, ["pairs", "distill"])  # once the first run is over, they run
    assert (tmp_path / "ck.pt").exists()


def test_a_missing_or_corrupt_classifier_is_one_line(tmp_path):
    """#40: FileNotFoundError and SafetensorError tracebacks in evaluate and distill."""
    from dmdlib.evaluation.classifier import load_classifier

    with pytest.raises(DataError, match=r"c.safetensors: feature classifier not found; run the features stage"):
        load_classifier(tmp_path / "c.safetensors")
    (tmp_path / "c.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(DataError, match=r"c.safetensors: not a feature classifier the features stage wrote \("):
        load_classifier(tmp_path / "c.safetensors")
