"""Metrics: FID/KID behave, precision/recall detect collapse, Inception is chosen only when its file exists."""

import numpy as np
import pytest
import torch

from dmdlib import evaluation
from dmdlib.errors import ParamsError
from dmdlib.evaluation import INCEPTION_FILE, find_inception, load_statistics, throughput
from dmdlib.metrics import class_shares, fid, fid_to_statistics, kid, mean_over_sets, paired_ratio, precision_recall


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    features = torch.randn(1000, 16, generator=torch.Generator().manual_seed(0))
    other = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
    assert abs(fid(features, features)) < 1e-6
    same_distribution = fid(features, other)
    shifted = fid(features, other + 0.5)
    assert same_distribution < 0.5 and shifted > 3.5  # a 0.5 shift in 16 dims adds 16 * 0.25 = 4
    assert kid(features, other + 0.5) > 10 * abs(kid(features, other))


def test_precision_recall_see_mode_collapse():
    rng = torch.Generator().manual_seed(0)
    real = torch.randn(500, 4, generator=rng)
    healthy = torch.randn(500, 4, generator=rng)
    collapsed = real[:10].repeat(50, 1) + 0.01 * torch.randn(500, 4, generator=rng)
    precision, recall = precision_recall(real, healthy)
    assert precision > 0.8 and recall > 0.8
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.2  # faithful samples of few modes: high precision, low recall
    assert torch.allclose(class_shares(torch.tensor([0, 0, 1, 3]), 4), torch.tensor([0.5, 0.25, 0, 0.25], dtype=torch.float64))


def test_sample_sets_give_means_spreads_and_paired_ratios():
    rows = [{"fid_classifier": 0.2, "recall_classifier": 0.8}, {"fid_classifier": 0.4, "recall_classifier": 0.9}]
    summary = mean_over_sets(rows)
    assert summary["fid_classifier"] == pytest.approx(0.3) and summary["recall_classifier"] == pytest.approx(0.85)
    assert summary["fid_classifier_std"] == pytest.approx(0.2 / 2**0.5)  # sample std of two values 0.2 apart
    assert "recall_classifier_std" not in summary and mean_over_sets(rows[:1])["fid_classifier_std"] == 0
    mean, std = paired_ratio([0.3, 0.2, 0.25], [0.2, 0.2, 0.25])  # per-set ratios 1.5, 1, 1
    assert mean == pytest.approx(7 / 6) and std == pytest.approx(((1 / 3) ** 2 + 2 * (1 / 6) ** 2) ** 0.5 / 2**0.5)


def test_inception_file_is_used_only_when_present(tmp_path):
    clean_fid_dir = tmp_path / "clean-fid"
    clean_fid_dir.mkdir()
    assert find_inception(None, clean_fid_dir) is None
    configured = tmp_path / "weights" / INCEPTION_FILE
    assert find_inception(configured, clean_fid_dir) is None
    configured.parent.mkdir()
    configured.write_bytes(b"not read by the selection logic")
    assert find_inception(configured, clean_fid_dir) == configured
    (clean_fid_dir / INCEPTION_FILE).write_bytes(b"x")
    assert find_inception(None, clean_fid_dir) == clean_fid_dir / INCEPTION_FILE


def test_peak_tensor_memory_counts_the_activations():
    from dmdlib.evaluation import peak_tensor_memory_mib

    layer = torch.nn.Conv2d(1, 64, 3, padding=1)
    x = torch.randn(100, 1, 16, 16)
    with torch.no_grad():
        peak = peak_tensor_memory_mib(lambda: layer(x).relu().sum())
    one_activation = 100 * 64 * 16 * 16 * 4 / 2**20  # 6.25 MiB: the conv output, and relu's output beside it
    assert one_activation <= peak <= 3 * one_activation


def test_throughput_takes_the_median_batch_and_runs_fast_models_longer(monkeypatch):
    clock = [0.0]
    durations = iter([9.0] + [0.125, 5.0] + [0.125] * 100)  # warm-up, one hiccup among 1/8 s batches
    calls = []

    def sample():
        calls.append(1)
        clock[0] += next(durations)

    monkeypatch.setattr(evaluation.time, "perf_counter", lambda: clock[0])
    assert throughput(sample, batch_size=10, repeats=3, min_seconds=2.0) == 80.0  # 10 images / 0.125 s
    assert len(calls) == 1 + 3  # warm-up + 3 timed: 5.25 s already cover min_seconds
    calls.clear()
    durations = iter([0.125] * 100)
    assert throughput(sample, batch_size=10, repeats=3, min_seconds=2.0) == 80.0
    assert len(calls) == 1 + 16  # fast batches run until 2 s are timed


def test_fid_to_published_statistics_equals_fid_to_the_features_they_summarise(tmp_path):
    rng = torch.Generator().manual_seed(0)
    real, generated = torch.randn(300, 8, generator=rng), torch.randn(200, 8, generator=rng) + 0.3
    features = real.double().numpy()
    np.savez(tmp_path / "stats.npz", mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    assert fid_to_statistics(*load_statistics(tmp_path / "stats.npz"), generated) == pytest.approx(fid(real, generated))
    np.savez(tmp_path / "other.npz", mean=features.mean(0))
    with pytest.raises(ParamsError, match=r"other.npz: expected clean-fid's .npz with arrays 'mu' and 'sigma'"):
        load_statistics(tmp_path / "other.npz")


def test_a_diffusers_samplers_evaluations_are_counted_and_an_incomparable_noise_floor_is_omitted(tmp_path):
    """DDIM with 3 steps makes 3 network evaluations (it was reported as null); with 20 samples per model and
    15 held-out images, the noise floor would use another count: it is omitted, saying why."""
    import json

    from tiny_models import save_tiny_ddpm
    from tiny_project import pipeline_params, run_stages

    from dmdlib.data import ImageSet, split_train_heldout, write_image_parquet

    save_tiny_ddpm(tmp_path / "ddpm")
    images = torch.randint(0, 256, (60, 8, 8, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    write_image_parquet(tmp_path / "data.parquet", ImageSet(images, (torch.arange(60) % 3).numpy(),
                                                            split_train_heldout(60, 0.25, 0), ["a", "b", "c"]))
    params = pipeline_params().replace("  steps: 2\n", "  steps: 3\n  sampler: DDIMScheduler\n", 1)
    params = params.replace("  samples: 12\n  sample_sets: 2\n", "  samples: 20\n  sample_sets: 1\n")
    (tmp_path / "params.yaml").write_text(f"teacher:\n  kind: diffusers_ddpm\n  path: {tmp_path / 'ddpm'}\n" + params)
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["teacher"]["nfe"] == 3 and metrics["dmd_one_step"]["nfe"] == 1
    assert metrics["noise_floor"] is None
    assert metrics["noise_floor_omitted"].startswith("the held-out split has 15 images, fewer than evaluate.samples (20)")
