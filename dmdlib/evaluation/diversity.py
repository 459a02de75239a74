"""Cheap signs of collapse while training: class shares, sample spread, and FID in the classifier's feature space."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmdlib.evaluation.classifier import FeatureClassifier, predict
from dmdlib.evaluation.metrics import fid


@dataclass
class Diversity:
    spread: float  # mean pairwise distance of samples over that of real images (about 1 when healthy)
    class_shares: list[float] | None  # share of each predicted class among samples
    missing_classes: list[int]  # classes below half their share in the data
    feature_fid: float | None = None  # FID of the samples against the real images in the classifier's feature space

    def warning(self) -> str | None:
        """A message when the samples look collapsed, else None."""
        problems = []
        if self.spread < 0.5:
            problems.append(f"samples spread only {self.spread:.2f}x as far apart as real images")
        if self.missing_classes:
            problems.append(f"classes {self.missing_classes} appear at under half their share in the data")
        if not problems:
            return None
        return (
            "possible mode collapse: "
            + "; ".join(problems)
            + "; try a lower distill.dm_weight or a higher distill.lambda_reg (docs/method.md)"
        )


def mean_pairwise_distance(x: torch.Tensor) -> float:
    flat = x.flatten(1).float()
    distances = torch.cdist(flat, flat)
    count = len(flat)
    return float(distances.sum() / (count * (count - 1)))


def measure_diversity(
    samples: torch.Tensor,
    real: torch.Tensor,
    classifier: FeatureClassifier | None = None,
    data_shares: torch.Tensor | None = None,
) -> Diversity:
    """Spread relative to `real` images, and predicted-class shares against the data's when a classifier is given."""
    spread = mean_pairwise_distance(samples) / mean_pairwise_distance(real)
    shares, missing, feature_fid = None, [], None
    if classifier is not None:
        feature_fid = fid(classifier.features(real), classifier.features(samples))
    if classifier is not None and data_shares is not None:
        predicted = predict(classifier, samples)
        counts = torch.bincount(predicted, minlength=len(data_shares)).float()
        shares_tensor = counts / counts.sum()
        shares = shares_tensor.tolist()
        missing = [k for k in range(len(data_shares)) if shares_tensor[k] < 0.5 * data_shares[k]]
    return Diversity(spread, shares, missing, feature_fid)
