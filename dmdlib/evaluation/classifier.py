"""A small image classifier trained on the prepared data: offline feature space for FID and diversity checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from dmdlib.data.io import atomic_output
from dmdlib.errors import DataError, DivergedError

log = logging.getLogger(__name__)


class FeatureClassifier(nn.Module):
    """Three strided conv blocks, global average pooling to `feature_dims`, then a linear classifier."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dims: int = 128):
        super().__init__()
        self.config = {"channels": channels, "num_classes": num_classes, "width": width, "feature_dims": feature_dims}

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]

        self.body = nn.Sequential(
            *block(channels, width, 1),
            *block(width, 2 * width, 2),
            *block(2 * width, feature_dims, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(feature_dims, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [batch, feature_dims] of images in [-1, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> FeatureClassifier:
    """Cross-entropy training with small random shifts (so features do not hinge on exact pixel positions)."""
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureClassifier(images.shape[1], num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for step in tqdm(range(steps), desc="classifier", unit="step", mininterval=1.0):
        index = torch.randint(0, len(images), (batch_size,), generator=rng)
        shift = torch.randint(-1, 2, (2,), generator=rng).tolist()
        x = torch.roll(images[index], shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[index])
        if not torch.isfinite(loss):
            raise DivergedError(f"classifier loss is {loss.item()} at step {step + 1}; lower features.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(model: FeatureClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted class of each image (on the model's device, in batches; labels come back on the CPU)."""
    device = next(model.parameters()).device
    return torch.cat(
        [model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    )


def save_classifier(path, model: FeatureClassifier) -> None:
    """Weights as safetensors, the constructor arguments in its metadata."""
    with atomic_output(path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp),
            metadata={"config": json.dumps(model.config)},
        )


def load_classifier(path) -> FeatureClassifier:
    """Inverse of `save_classifier`; the model comes back frozen in eval mode. A missing file, or one that is not a
    classifier `save_classifier` wrote, is a DataError naming it."""
    redo = "run the features stage (`dvc repro features`) to write it, or give the path of the one it wrote"
    if not Path(path).is_file():
        raise DataError(f"{path}: feature classifier not found; {redo}")
    try:
        with safe_open(str(path), "pt") as handle:
            config = json.loads(handle.metadata()["config"])
        model = FeatureClassifier(**config)
        model.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0][:200]
        raise DataError(f"{path}: not a feature classifier the features stage wrote ({reason}); {redo}") from None
    return model.eval().requires_grad_(False)
