"""Every stage CLI in DAG order on tiny data and a tiny teacher: the outputs one stage hands the next."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch
from tiny_models import tiny_kdiffusion
from tiny_project import pipeline_params, run_stages, write_tiny_project

from dmdlib.data.io import OUTPUT_MARK
from dmdlib.generators.generator import load_generator

pytestmark = pytest.mark.slow  # end to end: the fast tier (`-m 'not slow'`) leaves these out

EVAL_KEYS = {"fid_classifier", "kid_classifier", "precision_classifier", "recall_classifier", "min_class_share_ratio"}


def test_stages_in_order_produce_a_generator_and_metrics(tmp_path, caplog, repo_root):
    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])
    assert "no Inception FID: put inception-2015-12-05.pt at evaluate.inception_path" in caplog.text

    generator = load_generator(tmp_path / "generator")
    images = generator(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    assert sorted(x.name for x in (tmp_path / "grids").glob("*.png")) == [
        "curves.png",  # the training curves, beside the grids
        "final.png",
        "initial.png",
        "step-000002.png",
        "step-000003.png",
    ]
    assert (tmp_path / "live" / "plots" / "metrics" / "diversity" / "spread.tsv").exists()

    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["samples"] == 12 and metrics["sample_sets"] == 2 and metrics["feature_extractors"] == ["classifier"]
    assert EVAL_KEYS <= set(metrics["noise_floor"])
    for model in ("teacher", "initial_one_step", "dmd_one_step"):
        assert EVAL_KEYS | {"images_per_s", "nfe", "peak_memory_mib"} <= set(metrics[model])
    assert metrics["teacher"]["nfe"] == 3 and metrics["dmd_one_step"]["nfe"] == 1
    assert metrics["speedup_dmd_vs_teacher"] > 0
    assert metrics["teacher"]["fid_classifier_std"] > 0  # two sets of different seeds
    assert "fid_classifier_vs_teacher" not in metrics["teacher"]
    dmd, teacher, floor = metrics["dmd_one_step"], metrics["teacher"], metrics["noise_floor"]["fid_classifier"]
    # ratios of the mean FIDs over the same two sets (rounded to 4 places in the JSON)
    assert dmd["fid_classifier_vs_teacher"] == pytest.approx(
        dmd["fid_classifier"] / teacher["fid_classifier"], rel=2e-3
    )
    for row in (teacher, dmd):
        assert row["fid_classifier_above_floor"] == pytest.approx(row["fid_classifier"] - floor, abs=2e-4)
    net = (dmd["fid_classifier"] - floor) / (teacher["fid_classifier"] - floor)
    assert dmd["fid_classifier_above_floor_vs_teacher"] == pytest.approx(net, rel=5e-3)
    assert metrics["noise_floor"]["fid_classifier_se"] > 0  # the floor's own spread, carried into the net ratio's
    assert dmd["fid_classifier_above_floor_vs_teacher_se"] > 0 and dmd["fid_classifier_vs_teacher_se"] > 0
    assert sorted(x.name for x in (tmp_path / "eval").glob("*.png")) == [
        "comparison.png",
        "dmd_one_step.png",
        "initial_one_step.png",
        "teacher.png",
    ]

    report = subprocess.run(
        [sys.executable, "benchmarks/dmd_report.py", "--metrics", tmp_path / "eval.json", "--repeats", "0"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )  # as benchmarks/gpu_default.sh runs it
    assert report.returncode == 0, report.stderr
    assert "| dmd_one_step | 1 |" in report.stdout and "(FID - floor) / (teacher's - floor)" in report.stdout


def test_fresh_run_pictures_and_quiet(tmp_path, repo_root, caplog):
    """Grids an earlier run left (another step count, a model this run does not have) went on looking current;
    every command printed setuptools' pkg_resources warning, evaluate kineto's profiler lines; evaluate pasted its
    whole metrics JSON into the log and distill warned of collapse at every grid (#40)."""
    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params())
    for stale in (tmp_path / "grids" / "step-999999.png", tmp_path / "eval" / "teacher_guidance_2.png"):
        stale.parent.mkdir(parents=True)
        (stale.parent / OUTPUT_MARK).touch()  # the folder of an earlier run of the stage
        stale.write_bytes(b"an earlier run's picture")
    with caplog.at_level(logging.INFO):
        run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])
    assert caplog.text.count("possible mode collapse") <= 2  # once during the run, once at its end
    assert "headline figures" in caplog.text and '"noise_floor": {' not in caplog.text
    assert re.search(r"  dmd_one_step: fid_classifier [\d.]+, precision_classifier", caplog.text)
    assert not (tmp_path / "grids" / "step-999999.png").exists() and (tmp_path / "grids" / "final.png").exists()
    assert (
        not (tmp_path / "eval" / "teacher_guidance_2.png").exists() and (tmp_path / "eval" / "comparison.png").exists()
    )

    code = (
        "import torch, dmd.stages.distill, dmd.stages.evaluate; "
        "from dmdlib.evaluation.measure import peak_tensor_memory_mib; "
        "peak_tensor_memory_mib(lambda: torch.ones(64, 64) @ torch.ones(64, 64))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
