"""params.yaml validation: every bad input names the file, the key path, the value and what is expected."""

import functools
import logging

import pytest
import yaml

from dmdlib.params import DistillParams, Params, ParamsError, load_params


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


# Each profile's teacher kind and the distill settings its comments cite (DMD paper; DMD2's SDXL script; FastGen's
# FLUX recipe; the SD v1.5 profile's, carried to SD3; DMD's ImageNet recipe for DiT and EDM2; DMD2's EDM defaults):
# every DM range reaches 98% of the teacher's grid, uncapped.
PROFILES = {
    "sd": ("stable_diffusion", dict(dm_weight=1.0, lambda_reg=0.25, regression_warmup_steps=0, warmup_steps=500)),
    "sdxl": ("sdxl", dict(dm_weight=1.0, lambda_reg=0.0, regression_warmup_steps=0, warmup_steps=0, fake_steps=5)),
    "sd3": ("sd3", dict(dm_weight=1.0, lambda_reg=0.25, regression_warmup_steps=0, warmup_steps=500)),
    "flux": ("flux", dict(dm_weight=1.0, lambda_reg=0.0, regression_warmup_steps=0, generator_lr=1e-5, fake_steps=5)),
    "dit-imagenet256": ("dit", dict(dm_weight=1.0, lambda_reg=0.25, regression_warmup_steps=0, warmup_steps=500)),
    "edm-cifar10": ("edm", dict(dm_weight=1.0, lambda_reg=0.25, regression_warmup_steps=0, warmup_steps=500)),
    "edm-imagenet64": ("edm", dict(dm_weight=1.0, lambda_reg=0.25, regression_warmup_steps=0, generator_lr=2e-6)),
    "edm2-img512": ("edm2", dict(dm_weight=1.0, lambda_reg=0.25, regression_warmup_steps=0, warmup_steps=500)),
}


def test_repository_params_files_are_valid(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.prepare.source == "mnist"
    profiles = {path.parent.name: path for path in (repo_root / "pipelines").glob("*/params.yaml")}
    assert set(profiles) == {*PROFILES, "quick", "moving-digits"}
    assert load_params(profiles.pop("quick")).teacher.kind == "train"
    video = load_params(profiles.pop("moving-digits"))  # the embedded video default
    assert video.teacher.kind == "train" and video.prepare.source == "moving_mnist" and video.prepare.frames == 8
    for profile, path in profiles.items():
        assert load_params(path).teacher.kind == PROFILES[profile][0], profile


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_state_their_sources_settings(repo_root, profile):
    """A real teacher's profile states every distill key whose default is tuned for the embedded digits, at the value
    its source uses: none of the 16x16 default's DM range, weights or warm-up reaches it by omission."""
    path = repo_root / "pipelines" / profile / "params.yaml"
    stated = yaml.safe_load(path.read_text())["distill"]
    missing = DistillParams.embedded_tuned_keys - set(stated)
    assert not missing, f"{path} leaves {sorted(missing)} at the embedded default's values"
    distill = load_params(path).distill
    assert distill.dm_sigma_fractions == (0.02, 0.98) and distill.dm_sigma_max is None, profile
    for key, value in PROFILES[profile][1].items():
        assert getattr(distill, key) == value, f"{profile}: distill.{key}"


def test_defaults_when_section_is_absent(tmp_path):
    assert load_params(write(tmp_path, "")) == Params()


def test_the_quick_trial_shrinks_every_section(repo_root):
    """#40: a trial of every stage in minutes (`make quick`), on the embedded default's settings but its sizes."""
    default, quick = (load_params(repo_root / path) for path in ("params.yaml", "pipelines/quick/params.yaml"))
    for section, key in [
        ("features", "steps"),
        ("teacher", "train"),
        ("pairs", "count"),
        ("distill", "steps"),
        ("evaluate", "sample_sets"),
    ]:
        small, full = getattr(getattr(quick, section), key), getattr(getattr(default, section), key)
        small, full = (small.steps, full.steps) if key == "train" else (small, full)
        assert small < full, f"{section}.{key}"
    makefile = (repo_root / "Makefile").read_text()
    assert "pipelines/templates/class-conditional.yaml > pipelines/quick/dvc.yaml" in makefile


def test_the_defaults_taken_for_keys_not_stated_are_named(tmp_path, repo_root, caplog):
    """#40: `teacher: {kind: train}` without `train:`, or `distill: {}`, silently took the library's defaults."""
    with caplog.at_level(logging.WARNING):
        load_params(write(tmp_path, "teacher: {kind: train}\ndistill: {steps: 5}\n"), "teacher", "distill")
    assert "teacher.train (the whole section)" in caplog.text and "distill.objective" in caplog.text
    assert "distill.steps" not in caplog.text and "the library's defaults are taken" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_params(repo_root / "params.yaml", *Params.model_fields)
    assert caplog.text == ""


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
        ("pairs:\n  guidance: .inf\n", ["pairs.guidance", "finite number", "got inf"]),
        ("features:\n  lr: .inf\n", ["features.lr", "finite number"]),
        ("features:\n  lr: 1.0e+30\n", ["features.lr", "less than or equal to 1"]),
        ("teacher:\n  train:\n    sigma_mean: .nan\n", ["teacher.train.sigma_mean", "finite number"]),
        ("distill:\n  generator_sigmas: [80, .inf]\n", ["distill.generator_sigmas", "finite number"]),
        ("distill:\n  betas: [0.9, 1.5]\n", ["distill", "`betas` must both be in [0, 1)"]),
        ("distill:\n  dm_weight: 1.0e+30\n", ["distill.dm_weight", "less than or equal to 1000"]),
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


def flat(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_params_yaml_states_every_key_at_the_models_default(repo_root):
    """One source of defaults: params.yaml lists every key of every section, each at the pydantic model's default."""
    stated = flat(yaml.safe_load((repo_root / "params.yaml").read_text()))
    defaults = flat(Params().model_dump(mode="json"))
    assert sorted(stated) == sorted(defaults), "keys missing from params.yaml or from the models"
    differing = {key: (stated[key], defaults[key]) for key in defaults if stated[key] != defaults[key]}
    assert not differing, f"params.yaml value vs model default: {differing}"


def test_every_experiment_sets_valid_params(repo_root, tmp_path):
    """Each setting of scripts/experiments.yaml names a key of params.yaml and a value it accepts."""
    experiments = yaml.safe_load((repo_root / "scripts" / "experiments.yaml").read_text())
    assert len(experiments) >= 5
    for name, experiment in experiments.items():
        assert experiment["what"] and experiment["settings"], name
        params = yaml.safe_load((repo_root / "params.yaml").read_text())
        for setting in experiment["settings"]:  # as `dvc exp run -S key=value` sets it
            key, value = setting.split("=", 1)
            *path, last = key.split(".")
            section = functools.reduce(lambda node, part: node[part], path, params)
            assert last in section, f"{name}: {key} is not a key of params.yaml"
            section[last] = yaml.safe_load(value)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
        assert load_params(tmp_path / f"{name}.yaml") != load_params(repo_root / "params.yaml"), (
            f"{name} changes nothing"
        )
