"""params.yaml validation: every bad input names the file, the key path, the value and what is expected."""

import re
import subprocess
import sys

import pytest

from dmdlib.params import Params, ParamsError, load_params


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_files_are_valid(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.prepare.source == "mnist"
    assert load_params(repo_root / "pipelines" / "sd" / "params.yaml").teacher.kind == "stable_diffusion"


def test_defaults_when_section_is_absent(tmp_path):
    assert load_params(write(tmp_path, "")) == Params()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prepare:\n  resolutoin: 16\n", ["prepare.resolutoin", "unknown key", "resolution"]),
        ("prepar:\n  resolution: 16\n", ["prepar:", "unknown key", "prepare"]),
        ("prepare:\n  resolution: sixteen\n", ["prepare.resolution", "valid integer", "'sixteen'"]),
        ("prepare:\n  resolution: 4\n", ["prepare.resolution", "greater than or equal to 8", "got 4"]),
        ("prepare:\n  heldout_fraction: 1.5\n", ["prepare.heldout_fraction", "less than 1", "got 1.5"]),
        ("prepare:\n  channels: 2\n", ["prepare.channels", "1 or 3", "got 2"]),
        ("prepare:\n  source: image_folder\n", ["prepare", "needs `image_folder`"]),
        ("distill:\n  dm_weight: 0\n  lambda_reg: 0\n", ["distill", "no loss"]),
        ("distill:\n  mixed_precision: no\n", ["distill.mixed_precision", "'fp32' or 'bf16'", "got False"]),
        ("teacher:\n  train:\n    channels: [8, 8]\n", ["teacher.train", "same length"]),
    ],
)
def test_bad_params_name_file_key_and_value(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "prepare: [unclosed\n"))
    with pytest.raises(ParamsError, match="mapping of sections"):
        load_params(write(tmp_path, "- a list\n"))


def test_every_experiment_in_the_script_sets_valid_params(repo_root, tmp_path):
    """Each `-S` setting of scripts/experiments.sh names a key of params.yaml and a value it accepts."""
    script = (repo_root / "scripts" / "experiments.sh").read_text()
    variables = dict(re.findall(r'^(\w+)="([^"]*)"', script, re.MULTILINE))
    experiments = dict(re.findall(r'^\s+\[([\w-]+)\]="([^"]*)"', script, re.MULTILINE))
    order = re.search(r"^ORDER=\((.*)\)", script, re.MULTILINE).group(1).split()
    assert sorted(order) == sorted(experiments) and len(experiments) > 20
    for name, settings in experiments.items():
        for _ in range(2):  # SLOW refers to LADDER
            settings = re.sub(r"\$(\w+)", lambda match: variables[match.group(1)], settings)
        out = tmp_path / f"{name}.yaml"
        subprocess.run([sys.executable, "benchmarks/params_variant.py", str(out), *settings.split()], cwd=repo_root, check=True)
        load_params(out)
