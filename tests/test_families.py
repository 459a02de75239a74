"""The teacher-family registry: every family module is registered, named where users choose a kind, and described by
a typed reference that writes back exactly the JSON its writers wrote."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from tiny_models import save_tiny_wan
from typer.testing import CliRunner

from dmd.stages.teacher import app as teacher_app
from dmdlib.errors import TeacherError
from dmdlib.params import TeacherParams
from dmdlib.teachers.families import FAMILIES, load_teacher
from dmdlib.teachers.family import TeacherReference

FAMILY_FOLDER = Path(__file__).parents[1] / "dmdlib" / "teachers" / "families"


def test_every_family_module_is_registered():
    """A family is one module of dmdlib/teachers/families/ listed in FAMILIES; none is left out."""
    import importlib

    registered = {family.kind for family in FAMILIES.values()}
    for path in sorted(FAMILY_FOLDER.glob("*.py")):
        if path.stem == "__init__":
            continue
        module = importlib.import_module(f"dmdlib.teachers.families.{path.stem}")
        records = [value for value in vars(module).values() if type(value).__name__ == "Family"]
        assert records and all(record.kind in registered for record in records), path.name


def test_every_kind_is_named_where_users_choose_one(repo_root):
    """teacher.kind's help and params.yaml's comment list every registered kind."""
    description = TeacherParams.model_fields["kind"].description
    comment = next(line for line in (repo_root / "params.yaml").read_text().splitlines() if "  kind: train" in line)
    for kind in FAMILIES:
        assert f"'{kind}'" in description and kind in comment, kind


@pytest.mark.parametrize(
    "written",
    [
        {
            "kind": "kdiffusion",
            "path": "model.safetensors",
            "config": None,
            "trained": {"fingerprint": "f", "steps": 4},
        },
        {"kind": "edm2", "path": "n.safetensors", "config": "n.json", "vae": None, "encoder": None, "source": "s"},
        {"kind": "flux", "path": "/f", "config": None, "resolution": 512, "embedded_guidance": 3.5, "source": "s"},
        {"kind": "wan", "path": "/w", "config": None, "resolution": 480, "frames": 81, "source": "s"},
        {"kind": "kdiffusion", "path": "generator.safetensors"},
    ],
)
def test_a_reference_writes_back_what_was_written(written):
    """The keys a writer set, in its order, and nothing else: teacher.json and generator.json keep their bytes."""
    reference = TeacherReference.model_validate(written)
    assert json.dumps(reference.as_json()) == json.dumps(written)
    expected = written["path"] if written["path"].startswith("/") else f"/somewhere/{written['path']}"
    assert reference.with_paths_under("/somewhere").path == expected
    with pytest.raises(ValidationError, match="colour"):
        TeacherReference.model_validate({**written, "colour": "red"})


def test_an_unknown_kind_names_the_kinds_there_are(tmp_path):
    (tmp_path / "params.yaml").write_text(f"teacher:\n  kind: wan21\n  path: {tmp_path}\n")
    result = CliRunner().invoke(teacher_app, ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "t")])
    assert result.exit_code != 0 and "'wan21'" in result.output
    assert all(kind in result.output for kind in FAMILIES)


def test_a_two_expert_wan_folder_is_refused_naming_what_works(tmp_path):
    folder = save_tiny_wan(tmp_path / "wan")
    index = json.loads((folder / "model_index.json").read_text())
    index.update(transformer_2=["diffusers", "WanTransformer3DModel"], boundary_ratio=0.875)
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(TeacherError, match="two-expert Wan 2.2"):
        load_teacher({"kind": "wan", "path": str(folder)})
