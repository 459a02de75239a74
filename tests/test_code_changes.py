"""Nothing stale after a code change or a re-read teacher: checkpoints and shards claim the code that made them, and a
teacher's identity covers how its weights are read, not only the weights."""

import json
import logging
import re
import shutil
import sys

import pytest
import torch
from tiny_models import save_tiny_ddpm, save_tiny_sd3, tiny_kdiffusion
from tiny_project import pipeline_params, run_stages, write_tiny_project

from dmdlib.errors import DataError
from dmdlib.generators.generator import Generator, check_generator_teacher, save_generator
from dmdlib.params import PairsParams
from dmdlib.provenance import code_digest
from dmdlib.teachers.families import load_teacher
from dmdlib.teachers.loading import teacher_digest
from dmdlib.training.pairs import pair_metadata


def write_package(root, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (root / name / file).write_text(text)


def test_code_digest_follows_imports_and_ignores_prose(tmp_path, monkeypatch):
    files = {
        "__init__.py": "",
        "stage.py": '"""A stage."""\nfrom codepkg.helper import f\n\n\ndef main():\n    return f()\n',
        "helper.py": "def f():\n    return 1  # one\n",
        "unused.py": "def g():\n    return 2\n",
    }
    write_package(tmp_path / "a", "codepkg", files)
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    first = code_digest("codepkg.stage", ("codepkg",))

    def digest_with(**changes) -> str:
        folder = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
        write_package(folder, "codepkg", {**files, **changes})
        sys.modules.pop("codepkg", None)
        monkeypatch.setattr(sys, "path", [str(folder), *[p for p in sys.path if "codepkg" not in p]])
        from dmdlib import provenance

        provenance._package_folder.cache_clear()
        return code_digest("codepkg.stage", ("codepkg",))

    assert digest_with() == first  # another place on disk: the same code
    assert digest_with(**{"stage.py": files["stage.py"].replace("A stage.", "The stage.")}) == first  # a docstring
    assert digest_with(**{"helper.py": "def f():\n\n    return 1  # another comment\n"}) == first
    assert digest_with(**{"unused.py": "def g():\n    return 3\n"}) == first  # not imported by the stage
    assert digest_with(**{"helper.py": "def f():\n    return 2\n"}) != first  # an imported module's code
    assert digest_with(**{"stage.py": files["stage.py"].replace("return f()", "return -f()")}) != first


def test_the_stages_claim_their_code(tmp_path):
    for stage in ("dmd.stages.teacher", "dmd.stages.pairs", "dmd.stages.distill"):
        assert len(code_digest(stage, ("dmdlib", "dmd"))) == 64
    assert code_digest("dmd.stages.pairs", ("dmdlib", "dmd")) != code_digest("dmd.stages.distill", ("dmdlib", "dmd"))


def test_a_code_change_sets_checkpoint_and_shards_aside(tmp_path, monkeypatch, caplog):
    """Before: a changed DM loss re-ran `distill`, which 'resumed' at its last step, ran none and saved the old
    generator again; pair shards were kept whatever code made them."""
    import dmd.stages.common

    teacher = tiny_kdiffusion()
    write_tiny_project(tmp_path, teacher, pipeline_params())
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill"])
    first_pairs = {path.name: path.read_bytes() for path in (tmp_path / "pairs").glob("shard-*")}

    real_digest = dmd.stages.common.code_digest
    monkeypatch.setattr(dmd.stages.common, "code_digest", lambda module, packages: "0" * 64)  # as if the code changed
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["pairs", "distill"])
    assert "made by other code (" in caplog.text and "(and any other shard that does not match)" in caplog.text
    assert "re-made 2 shards that did not match" in caplog.text
    assert all(first_pairs[p.name] != p.read_bytes() for p in (tmp_path / "pairs").glob("shard-*"))
    kept = list(tmp_path.glob("ck.*.pt"))
    assert len(kept) == 1 and "pair_set.code" in caplog.text
    assert re.search(r"made with other settings \(code: '[0-9a-f]{12}' -> '0{12}'", caplog.text)  # digests shortened
    assert f"kept as {kept[0].name}; starting from step 0" in caplog.text and "resuming distillation" not in caplog.text
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 3  # trained again, from the start

    monkeypatch.setattr(dmd.stages.common, "code_digest", real_digest)
    caplog.clear()
    params = (tmp_path / "params.yaml").read_text()
    memory_only = params.replace("  steps: 3\n", "  steps: 4\n  gradient_checkpointing: true\n  compile: false\n", 1)
    (tmp_path / "params.yaml").write_text(memory_only)
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["pairs", "distill"])  # the old code's shards and checkpoint are its again
    assert (
        "taking back ck." in caplog.text and "resuming distillation from" in caplog.text and "at step 3" in caplog.text
    )


def test_a_code_change_retrains_the_teacher(tmp_path, monkeypatch, caplog):
    from typer.testing import CliRunner

    import dmd.stages.common
    from dmd.stages.prepare import app as prepare_app
    from dmd.stages.teacher import app as teacher_app

    (tmp_path / "params.yaml").write_text(
        "prepare: {resolution: 8}\n"
        "teacher: {kind: train, train: {channels: [8, 8], depths: [1, 1], mapping_width: 8, steps: 2, batch_size: 4, "
        "checkpoint_every: 1, sample_steps: 2}}\n"
    )
    p = lambda name: str(tmp_path / name)  # noqa: E731
    runner = CliRunner()
    run = lambda app, *args: runner.invoke(app, ["--params", p("params.yaml"), *args])  # noqa: E731
    assert run(prepare_app, "--out", p("data.parquet"), "--preview", p("data.png")).exit_code == 0
    teacher_args = ["--data", p("data.parquet"), "--out", p("teacher"), "--samples", p("t.png")]
    teacher_args += ["--checkpoint", p("teacher.pt"), "--live", p("live")]
    assert run(teacher_app, *teacher_args).exit_code == 0
    monkeypatch.setattr(dmd.stages.common, "code_digest", lambda module, packages: "1" * 64)
    with caplog.at_level(logging.INFO):
        result = run(teacher_app, *teacher_args)
    assert result.exit_code == 0, result.output
    assert "made with other settings (code: " in caplog.text and len(list(tmp_path.glob("teacher.*.pt"))) == 1


@pytest.fixture(scope="module")
def ddpm_folders(tmp_path_factory):
    """One UNet's weights under an epsilon and a v-prediction scheduler, and a copy of the first elsewhere."""
    root = tmp_path_factory.mktemp("ddpm")
    epsilon, v = save_tiny_ddpm(root / "epsilon"), save_tiny_ddpm(root / "v", prediction_type="v_prediction")
    shutil.copytree(epsilon, root / "moved")
    return epsilon, v, root / "moved"


def test_the_teachers_identity_covers_how_it_is_read(ddpm_folders, tmp_path):
    epsilon, v, moved = (load_teacher({"kind": "diffusers_ddpm", "path": str(path)}) for path in ddpm_folders)
    assert all(torch.equal(a, b) for a, b in zip(epsilon.state_dict().values(), v.state_dict().values()))
    assert teacher_digest(epsilon) == teacher_digest(moved)  # where the files are is not what the teacher is
    assert teacher_digest(epsilon) != teacher_digest(v)
    params = PairsParams(steps=2)
    assert pair_metadata(epsilon, params) != pair_metadata(v, params)  # so old shards are re-made, distill restarts

    save_generator(
        tmp_path / "generator", Generator.from_teacher(epsilon), {"kind": "diffusers_ddpm"}, teacher_digest(epsilon)
    )
    with pytest.raises(DataError, match="distilled from teacher"):
        check_generator_teacher(tmp_path / "generator", teacher_digest(v), tmp_path / "teacher")


def test_a_flow_teachers_shift_is_part_of_its_identity(tmp_path):
    folder = save_tiny_sd3(tmp_path / "sd3")
    reference = {"kind": "sd3", "path": str(folder)}
    three = teacher_digest(load_teacher(reference))
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "shift": 1.0}))
    assert teacher_digest(load_teacher(reference)) != three
