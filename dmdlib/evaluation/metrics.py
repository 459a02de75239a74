"""Sample-quality metrics in a feature space: FID, KID (through clean-fid), precision and recall, class shares."""

from __future__ import annotations

import numpy as np
import torch


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017)."""
    return fid_to_statistics(*_mean_and_covariance(features_a), features_b)


def fid_to_statistics(mu: np.ndarray, sigma: np.ndarray, features: torch.Tensor) -> float:
    """FID of a feature set against precomputed reference statistics (mean, covariance)."""
    return frechet_distance(mu, sigma, *_mean_and_covariance(features))


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)): the Frechet distance of two Gaussians (Heusel et al.
    2017, eq. 6), as clean-fid computes it (a 1e-6 ridge where the product is numerically singular)."""
    from scipy import linalg

    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        ridge = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root).real)


def _mean_and_covariance(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    # one float64 copy alive at a time (50,000 x 2,048 Inception features: 0.8 GB each)
    values = features.double().numpy()
    return values.mean(0), np.cov(values, rowvar=False)


def kid(features_a: torch.Tensor, features_b: torch.Tensor, seed: int = 0) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018), by clean-fid, with a fixed subset seed."""
    from cleanfid.fid import kernel_distance

    state = np.random.get_state()
    np.random.seed(seed)  # clean-fid draws its subsets from numpy's global generator
    try:
        return kernel_distance(features_a.double().numpy(), features_b.double().numpy())
    finally:
        np.random.set_state(state)


def precision_recall(
    real: torch.Tensor, generated: torch.Tensor, k: int = 3, block_elements: int = 2**24
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-nearest-neighbour balls.

    Precision: share of generated samples inside some real sample's k-NN ball (fidelity).
    Recall: share of real samples inside some generated sample's k-NN ball (coverage).
    Distances in float64, a block of rows at a time (about `block_elements` of them, 128 MiB by default): the
    memory stays linear in the count, not 50,000^2 x 8 bytes = 20 GB per matrix.
    """
    real, generated = real.double(), generated.double()

    def blocks(points: torch.Tensor, against: torch.Tensor):
        rows = max(1, block_elements // len(against))
        for start in range(0, len(points), rows):
            yield torch.cdist(points[start : start + rows], against)

    def radii(points: torch.Tensor) -> torch.Tensor:
        # k+1: the point itself is at distance 0
        return torch.cat([distances.kthvalue(k + 1, dim=1).values for distances in blocks(points, points)])

    def covered(samples: torch.Tensor, manifold: torch.Tensor) -> float:
        balls = radii(manifold)[None]
        inside = torch.cat([(distances <= balls).any(dim=1) for distances in blocks(samples, manifold)])
        return float(inside.double().mean())

    return covered(generated, real), covered(real, generated)


def class_shares(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Share of each class among predicted labels."""
    counts = torch.bincount(predicted, minlength=num_classes).double()
    return counts / counts.sum()


@torch.no_grad()
def clip_score(model, processor, images: torch.Tensor, texts: list[str], batch_size: int = 64) -> float:
    """CLIPScore (Hessel et al. 2021): mean of 100 * max(cos(image, text), 0) over image-prompt pairs."""
    scores = []
    for start in range(0, len(images), batch_size):
        pixels = ((images[start : start + batch_size].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        inputs = processor(
            text=texts[start : start + batch_size],
            images=list(pixels.permute(0, 2, 3, 1).numpy()),
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        output = model(**inputs)
        image = torch.nn.functional.normalize(output.image_embeds, dim=-1)
        text = torch.nn.functional.normalize(output.text_embeds, dim=-1)
        scores.append((100 * (image * text).sum(-1)).clamp(min=0))
    return float(torch.cat(scores).mean())


def mean_over_sets(rows: list[dict[str, float]]) -> dict[str, float]:
    """Every metric averaged over disjoint sample sets, plus each FID's spread (`<key>_std`, sample std) and the
    standard error of its mean (`<key>_se` = std / sqrt(sets))."""
    summary = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    for key in [key for key in rows[0] if key.startswith("fid_")]:
        std = float(np.std([row[key] for row in rows], ddof=1)) if len(rows) > 1 else 0.0
        summary[f"{key}_std"], summary[f"{key}_se"] = std, std / len(rows) ** 0.5
    return summary


def paired_ratio(
    values: list[float], baselines: list[float], floor: float = 0.0, floor_se: float = 0.0
) -> tuple[float, float]:
    """(mean(values) - floor) / (mean(baselines) - floor), both measured on the same sample sets from the same seeds,
    and its standard error: the jackknife's over the sets (each left out in turn, which keeps their pairing), plus,
    in quadrature, the floor's own standard error `floor_se` times the ratio's slope in the floor,
    (mean(values) - mean(baselines)) / (mean(baselines) - floor)^2 (the delta method).

    With `floor` the noise floor's FID, each FID loses the finite-sample part both share and the ratio compares what
    each model adds to it; a ratio of means, because per-set ratios of such small differences are far noisier.
    """
    values, baselines = np.asarray(values, dtype=float), np.asarray(baselines, dtype=float)
    ratio = lambda keep: (values[keep].mean() - floor) / (baselines[keep].mean() - floor)  # noqa: E731
    count = len(values)
    slope = (values.mean() - baselines.mean()) / (baselines.mean() - floor) ** 2
    variance = (slope * floor_se) ** 2
    if count >= 2:
        variance += jackknife_standard_error(ratio, np.arange(count)) ** 2
    return float(ratio(slice(None))), float(np.sqrt(variance))


def jackknife_standard_error(statistic, groups: np.ndarray) -> float:
    """Delete-a-group jackknife standard error of `statistic(keep)` (keep: a boolean mask of the items), each of the
    groups (0..G-1, one per item) left out in turn: sqrt((G - 1) / G * sum (theta_g - mean theta)^2)."""
    count = int(groups.max()) + 1
    left_out = np.array([statistic(groups != g) for g in range(count)])
    return float(np.sqrt((count - 1) / count * ((left_out - left_out.mean()) ** 2).sum()))
