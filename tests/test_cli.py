"""The `dmd` command: every stage a sub-command, listed without importing torch, errors that name what exists."""

import subprocess
import sys
from pathlib import Path

from dmd.cli import COMMANDS, summary

DMD = Path(sys.executable).with_name("dmd")  # the console script `pip install` puts beside the interpreter


def test_every_stage_module_is_a_command(repo_root):
    stage_files = {p.stem for p in (repo_root / "dmd" / "stages").glob("*.py")} - {"__init__", "common"}
    assert set(COMMANDS) == stage_files
    assert all(summary(name) and not summary(name).startswith("`") for name in COMMANDS)


def test_help_lists_the_commands_without_importing_torch():
    code = "import sys; sys.argv = ['dmd', '--help']; from dmd.cli import main; main(); print('torch' in sys.modules)"
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert listed.rstrip().endswith("False")
    for name in COMMANDS:
        assert f"\n  {name} " in listed


def test_the_installed_command_runs_a_stage_and_names_what_it_lacks(tmp_path):
    ran = subprocess.run([DMD, "checkpoints", "--folder", tmp_path], capture_output=True, text=True)
    assert ran.returncode == 0 and "no checkpoints" in ran.stderr
    unknown = subprocess.run([DMD, "distil"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no command 'distil'" in unknown.stderr and "distill" in unknown.stderr
    wrong_option = subprocess.run([DMD, "checkpoints", "--keep", "-1"], capture_output=True, text=True)
    assert wrong_option.returncode == 2 and "dmd checkpoints" in wrong_option.stderr
