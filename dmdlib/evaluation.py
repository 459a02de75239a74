"""Feature extractors for FID (the offline classifier, or clean-fid's Inception) and sampling-speed measurement."""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dmdlib.classifier import FeatureClassifier

log = logging.getLogger(__name__)

INCEPTION_FILE = "inception-2015-12-05.pt"  # the TorchScript Inception that clean-fid's "clean" mode uses
Extractor = Callable[[torch.Tensor], torch.Tensor]  # images in [-1, 1], NCHW -> features


def classifier_extractor(classifier: FeatureClassifier) -> Extractor:
    """Penultimate activations of the pipeline's own classifier, at the data's resolution."""
    return classifier.features


def find_inception(configured: str | os.PathLike | None, clean_fid_dir: Path = Path("/tmp")) -> Path | None:
    """The Inception weights file: the configured path, else clean-fid's own download place, else None."""
    candidates = [Path(configured)] if configured else []
    candidates.append(clean_fid_dir / INCEPTION_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def inception_extractor(weights: Path, device: torch.device) -> Extractor:
    """clean-fid's Inception features in 'clean' mode: uint8 images resized to 299 with PIL bicubic."""
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    if weights.name != INCEPTION_FILE:
        raise ValueError(f"{weights}: clean-fid loads its Inception weights only under the name {INCEPTION_FILE}")
    model = InceptionV3W(str(weights.parent), download=False).to(device).eval()
    resize = build_resizer("clean")

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).cpu().numpy()
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        resized = np.stack([resize(image.astype(np.uint8)) for image in pixels]).transpose(0, 3, 1, 2)
        return model(torch.from_numpy(resized).float().to(device)).cpu()

    return extract


@torch.no_grad()
def extract_features(extractor: Extractor, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Features of all images, in batches."""
    return torch.cat([extractor(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


def throughput(sample: Callable[[], torch.Tensor], batch_size: int, repeats: int, min_seconds: float = 2.0) -> float:
    """Images per second of `sample()` (one batch per call) from the median call, after one warm-up call.

    At least `repeats` calls and at least `min_seconds` of them: a one-step batch takes a tenth of a second, so a
    few calls alone would let one scheduler hiccup move the figure; the median ignores such outliers.
    """
    sample()
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    synchronize()
    seconds = []
    while len(seconds) < repeats or sum(seconds) < min_seconds:
        start = time.perf_counter()
        sample()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return batch_size / statistics.median(seconds)


def peak_tensor_memory_mib(run: Callable[[], object]) -> float:
    """Peak of tensor memory allocated while `run()` executes, above what was allocated before.

    On a GPU, CUDA's allocator statistics; on the CPU, the PyTorch profiler's allocation trace
    (every allocation and free, in time order). Weights loaded before the call are not counted.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    changes = sorted((event.time_range.start, event.self_cpu_memory_usage)
                     for event in profiler.events() if event.self_cpu_memory_usage)
    current = peak = 0
    for _, change in changes:
        current += change
        peak = max(peak, current)
    return peak / 2**20
