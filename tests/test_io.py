"""Atomic outputs: an interrupted write never leaves a half-written file that looks complete."""

import pytest

from dmdlib.data.io import OUTPUT_MARK, atomic_output, claim_folder
from dmdlib.errors import OutputError


class Interrupted(Exception):
    pass


def test_file_appears_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert list(target.parent.iterdir()) == [target]


def test_failure_keeps_previous_output_and_removes_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(Interrupted):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise Interrupted
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_directory_output_replaces_old_directory(tmp_path):
    target = tmp_path / "shards"
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "stale").write_text("x")
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "fresh").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARK, "fresh"]
    assert list(tmp_path.iterdir()) == [target]


def test_a_folder_not_written_here_is_never_replaced_or_emptied(tmp_path):
    """#40: `--out` naming a folder of the user's (or `models`, holding the teacher) refused, its files kept."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "my_model.bin").write_text("keep")
    with pytest.raises(OutputError, match=r"theirs: a folder this project did not write \(it holds my_model.bin"):
        with atomic_output(theirs) as tmp:
            tmp.mkdir()
            (tmp / "generator.json").write_text("{}")
    with pytest.raises(OutputError, match="did not write"):
        claim_folder(theirs, clear=True)
    assert [p.name for p in theirs.iterdir()] == ["my_model.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"]
    (tmp_path / "empty").mkdir()
    assert sorted(p.name for p in claim_folder(tmp_path / "empty", clear=True).iterdir()) == [OUTPUT_MARK]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="nothing was written"):
        with atomic_output(tmp_path / "out"):
            pass


def test_atomic_output_modes(tmp_path):
    """safetensors writes 0600 files; an output made through atomic_output has the mode a plain open() gives."""
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "weights.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        with atomic_output(tmp_path / "folder") as tmp:
            tmp.mkdir()
            save_file({"w": torch.zeros(2)}, str(tmp / "inside.safetensors"))
    finally:
        os.umask(umask)
    for path, mode in (
        (tmp_path / "weights.safetensors", 0o644),
        (tmp_path / "folder", 0o755),
        (tmp_path / "folder" / "inside.safetensors", 0o644),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
