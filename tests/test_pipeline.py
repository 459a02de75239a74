"""Every stage CLI in DAG order on tiny data and a tiny teacher: the outputs one stage hands the next."""

import json
import logging

import torch
from typer.testing import CliRunner

from dmdlib.data import ImageSet, split_train_heldout, write_image_parquet
from dmdlib.generator import load_generator
from dmdlib.teachers import build_kdiffusion, kdiffusion_config, save_kdiffusion
from stages.distill import app as distill_app
from stages.evaluate import app as evaluate_app
from stages.features import app as features_app
from stages.pairs import app as pairs_app
from stages.teacher import app as teacher_app

EVAL_KEYS = {"fid_classifier", "kid_classifier", "precision_classifier", "recall_classifier", "min_class_share_ratio"}


def test_stages_in_order_produce_a_generator_and_metrics(tmp_path, caplog):
    torch.manual_seed(0)
    teacher = build_kdiffusion(kdiffusion_config(1, 8, [8, 8], [1, 1], 16, 3, 0.5, 0.002, 80.0))
    save_kdiffusion(tmp_path / "k.safetensors", teacher, teacher.config)
    rng = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (60, 8, 8, 1), generator=rng, dtype=torch.uint8).numpy(),
                    (torch.arange(60) % 3).numpy(), split_train_heldout(60, 0.25, 0), ["a", "b", "c"])
    write_image_parquet(tmp_path / "data.parquet", data)
    (tmp_path / "params.yaml").write_text(
        f"features:\n  steps: 5\n  batch_size: 8\n"
        f"teacher:\n  kind: kdiffusion\n  path: {tmp_path / 'k.safetensors'}\n  train:\n    sample_steps: 2\n"
        "pairs:\n  count: 6\n  shard_size: 3\n  batch_size: 3\n  steps: 2\n"
        "distill:\n  steps: 3\n  batch_size: 2\n  reg_batch_size: 2\n  regression_loss: l2\n  sample_every: 2\n"
        "  checkpoint_every: 2\n  ema_decay: 0.9\n"
        "evaluate:\n  samples: 12\n  speed_batch_size: 4\n  speed_repeats: 1\n"
    )
    p = lambda name: str(tmp_path / name)
    stages = [
        (features_app, ["--data", p("data.parquet"), "--out", p("classifier.safetensors"), "--metrics", p("classifier.json")]),
        (teacher_app, ["--out", p("teacher"), "--samples", p("t.png")]),
        (pairs_app, ["--teacher", p("teacher"), "--out", p("pairs")]),
        (distill_app, ["--teacher", p("teacher"), "--pairs", p("pairs"), "--data", p("data.parquet"),
                       "--classifier", p("classifier.safetensors"), "--out", p("generator"), "--samples", p("grids"),
                       "--checkpoint", p("ck.pt"), "--live", p("live")]),
        (evaluate_app, ["--data", p("data.parquet"), "--teacher", p("teacher"), "--generator", p("generator"),
                        "--classifier", p("classifier.safetensors"), "--metrics", p("eval.json"), "--images", p("eval")]),
    ]
    runner = CliRunner()
    with caplog.at_level(logging.INFO):
        for app, args in stages:
            result = runner.invoke(app, ["--params", p("params.yaml"), *args])
            assert result.exit_code == 0, result.output
    assert "no Inception FID: put inception-2015-12-05.pt at evaluate.inception_path" in caplog.text

    generator = load_generator(tmp_path / "generator")
    images = generator(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    assert sorted(x.name for x in (tmp_path / "grids").iterdir()) == ["final.png", "initial.png", "step-000002.png",
                                                                      "step-000003.png"]
    assert (tmp_path / "live" / "plots" / "metrics" / "diversity" / "spread.tsv").exists()

    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["samples"] == 12 and metrics["feature_extractors"] == ["classifier"]
    assert EVAL_KEYS <= set(metrics["noise_floor"])
    for model in ("teacher", "initial_one_step", "dmd_one_step"):
        assert EVAL_KEYS | {"images_per_s", "nfe", "peak_memory_mib"} <= set(metrics[model])
    assert metrics["teacher"]["nfe"] == 3 and metrics["dmd_one_step"]["nfe"] == 1
    assert metrics["speedup_dmd_vs_teacher"] > 0
    assert sorted(x.name for x in (tmp_path / "eval").iterdir()) == [
        "comparison.png", "dmd_one_step.png", "initial_one_step.png", "teacher.png"]
