"""Feature extractors for FID (the offline classifier, or clean-fid's Inception) and sampling-speed measurement."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dmdlib.data.images import to_uint8
from dmdlib.data.prepared import stratified_groups, stratified_subset
from dmdlib.errors import ParamsError
from dmdlib.evaluation.classifier import FeatureClassifier, predict
from dmdlib.evaluation.metrics import (
    class_shares,
    fid,
    fid_to_statistics,
    jackknife_standard_error,
    kid,
    mean_over_sets,
    precision_recall,
)

log = logging.getLogger(__name__)

INCEPTION_FILE = "inception-2015-12-05.pt"  # the TorchScript Inception that clean-fid's "clean" mode uses
Extractor = Callable[[torch.Tensor], torch.Tensor]  # images in [-1, 1], NCHW -> features


def classifier_extractor(classifier: FeatureClassifier) -> Extractor:
    """Penultimate activations of the pipeline's own classifier, at the data's resolution, on its device."""
    device = next(classifier.parameters()).device
    return lambda images: classifier.features(images.to(device))


def find_inception(configured: str | os.PathLike | None, clean_fid_dir: Path = Path("/tmp")) -> Path | None:
    """The Inception weights file: the configured path, else clean-fid's own download place, else None."""
    candidates = [Path(configured).expanduser()] if configured else []
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
        raise ParamsError(
            f"evaluate.inception_path {weights}: clean-fid loads its Inception weights only under the name "
            f"{INCEPTION_FILE}"
        )
    model = InceptionV3W(str(weights.parent), download=False).to(device).eval()
    resize = build_resizer("clean")
    # PIL resizes one image at a time, mostly outside the GIL: threads keep the cores (and the GPU) busy
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        resized = np.stack(list(pool.map(resize, clean_fid_pixels(images)))).transpose(0, 3, 1, 2)
        return model(torch.from_numpy(resized).float().to(device)).cpu()

    return extract


def clean_fid_pixels(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] as the uint8 RGB [N, H, W, 3] pixels clean-fid reads: rounded to the nearest level (a
    prepared image comes back exactly), grey repeated to three channels."""
    pixels = to_uint8(images)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reference statistics in clean-fid's .npz layout (arrays `mu` [2048], `sigma` [2048, 2048])."""
    try:
        with np.load(Path(path).expanduser()) as stats:
            mu, sigma = stats["mu"], stats["sigma"]
    except (OSError, ValueError, KeyError) as err:
        raise ParamsError(
            f"evaluate.inception_statistics {path}: expected clean-fid's .npz with arrays 'mu' and 'sigma' ({err})"
        ) from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ParamsError(f"evaluate.inception_statistics {path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    return mu, sigma


@torch.no_grad()
def extract_features(
    extractor: Extractor, images: torch.Tensor, batch_size: int = 250, desc: str = "features"
) -> torch.Tensor:
    """Features of all images, in batches (a progress bar past one batch)."""
    starts = tqdm(
        range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=len(images) <= batch_size
    )
    return torch.cat([extractor(images[i : i + batch_size]).float().cpu() for i in starts])


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


def count_evaluations(sample: Callable[[], object], denoiser: torch.nn.Module, batch_size: int) -> int:
    """Network evaluations per sample of `sample()` on `batch_size` samples, whatever its scheduler: the rows
    `denoiser.denoise` computes, however they reach it (classifier-free guidance's batched halves count twice,
    FLUX's guidance embedding once), over `batch_size`."""
    rows, denoise = [], denoiser.denoise

    def counting(x, *args, **kwargs):
        rows.append(len(x))
        return denoise(x, *args, **kwargs)

    denoiser.denoise = counting  # on the instance: calls through forward and direct `denoise` calls both see it
    try:
        sample()
    finally:
        del denoiser.denoise
    return sum(rows) // batch_size


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 to /dev/null: what native libraries print there, Python's own writes included."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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

    profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():  # kineto prints start/stop lines and a CUDA probe "ERROR" on GPU-less machines
        profiler.__enter__()
    try:
        run()
    finally:
        with _native_stderr_silenced():
            profiler.__exit__(None, None, None)
    changes = sorted(
        (event.time_range.start, event.self_cpu_memory_usage)
        for event in profiler.events()
        if event.self_cpu_memory_usage
    )
    current = peak = 0
    for _, change in changes:
        current += change
        peak = max(peak, current)
    return peak / 2**20


Sampler = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]  # (noise, labels) -> images in [-1, 1]


@dataclass
class ReferenceSet:
    """The real images every model is compared with, in each feature extractor's space, and the data's class shares."""

    extractors: dict[str, Extractor]
    features: dict[str, torch.Tensor]
    classifier: FeatureClassifier
    labels: np.ndarray  # of the reference images; -1 for unlabelled data
    data_shares: torch.Tensor | None  # None for unlabelled data
    precision_recall_k: int = 3
    statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # extractor -> published (mu, sigma)
    frames: int = 1  # video data: samples come as each clip's frames in order, measured frame by frame

    @classmethod
    def of(
        cls,
        images: torch.Tensor,
        labels: np.ndarray,
        extractors: dict[str, Extractor],
        classifier: FeatureClassifier,
        data_shares: torch.Tensor | None,
        precision_recall_k: int = 3,
        statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        frames: int = 1,
    ) -> "ReferenceSet":
        features = {name: extract_features(extract, images) for name, extract in extractors.items()}
        return cls(extractors, features, classifier, labels, data_shares, precision_recall_k, statistics, frames)

    def quality(self, samples: torch.Tensor) -> dict[str, float]:
        """FID and KID per extractor (against every reference image), precision and recall (classifier space, against
        as many reference images as samples: a seeded subset with the data's class shares), and the smallest
        class-share ratio."""
        row, features_of = {}, {}
        for name, extract in self.extractors.items():
            features = features_of[name] = extract_features(extract, samples, desc=f"{name} features")
            row[f"fid_{name}"] = fid(self.features[name], features)
            row[f"kid_{name}"] = kid(self.features[name], features)
            if self.statistics and name in self.statistics:
                row[f"fid_{name}_statistics"] = fid_to_statistics(*self.statistics[name], features)
        real = self.features["classifier"][torch.from_numpy(stratified_subset(self.labels, len(samples)))]
        precision, recall = precision_recall(real, features_of["classifier"], self.precision_recall_k)
        row["precision_classifier"], row["recall_classifier"] = precision, recall
        predicted = predict(self.classifier, samples) if self.data_shares is not None or self.frames > 1 else None
        if self.data_shares is not None:
            shares = class_shares(predicted, len(self.data_shares))
            row["min_class_share_ratio"] = float((shares / self.data_shares).min())
        if self.frames > 1:
            row.update(temporal_consistency(samples, predicted, self.frames))
        return row

    def fid_standard_errors(self, samples: torch.Tensor, labels: np.ndarray, groups: int = 10) -> dict[str, float]:
        """`fid_<extractor>_se` (and `_statistics_se`): the standard error of each FID of `samples`, by the
        delete-a-group jackknife over `groups` class-stratified groups of them (`metrics.jackknife_standard_error`).
        For one set of real images, the noise floor, this is the only measure of its own sampling spread."""
        assigned, errors = stratified_groups(labels, groups), {}
        for name, extract in self.extractors.items():
            features = extract_features(extract, samples)
            distances = {f"fid_{name}_se": functools.partial(fid, self.features[name])}
            if self.statistics and name in self.statistics:
                distances[f"fid_{name}_statistics_se"] = functools.partial(fid_to_statistics, *self.statistics[name])
            for key, distance in distances.items():
                errors[key] = jackknife_standard_error(
                    lambda keep, distance=distance, features=features: distance(features[torch.from_numpy(keep)]),
                    assigned,
                )
        return errors


def temporal_consistency(frames: torch.Tensor, predicted: torch.Tensor, per_clip: int) -> dict[str, float]:
    """Of clips given as their frames in order: `frame_class_agreement`, the share of consecutive frames the
    classifier gives the same class (a digit that stays itself), and `frame_change`, the mean absolute change of a
    pixel from one frame to the next, in [0, 1] units (how much moves; the noise floor's row is the data's)."""
    classes = predicted.reshape(-1, per_clip)
    clips = frames.reshape(-1, per_clip, *frames.shape[1:])
    return {
        "frame_class_agreement": float((classes[:, 1:] == classes[:, :-1]).float().mean()),
        "frame_change": float((clips[:, 1:] - clips[:, :-1]).abs().mean() / 2),
    }


@dataclass
class Measurement:
    """One model's metrics row (means over sample sets, speed, memory, NFE), its FIDs per set, and its grid."""

    row: dict[str, float]
    set_fids: dict[str, list[float]]
    grid: np.ndarray


def measure_model(
    sample: Sampler,
    nfe: int | None,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    sets: int,
    reference: ReferenceSet,
    *,
    speed_batch: int,
    speed_repeats: int,
    grid_inputs: tuple[torch.Tensor, torch.Tensor | None],
) -> Measurement:
    """Quality on `sets` disjoint sets of len(noise) / sets samples, speed at `speed_batch`, and a grid of fixed
    inputs."""
    samples = sample(noise, labels)
    count = len(samples) // sets  # video data: a clip's frames each count
    set_rows = [reference.quality(samples[k * count : (k + 1) * count]) for k in range(sets)]
    set_fids = {key: [row[key] for row in set_rows] for key in set_rows[0] if key.startswith("fid_")}
    row = rounded(mean_over_sets(set_rows))
    speed_noise, speed_labels = noise[:speed_batch], None if labels is None else labels[:speed_batch]
    run = lambda: sample(speed_noise, speed_labels)  # noqa: E731
    row["images_per_s"] = round(throughput(run, len(speed_noise), speed_repeats), 2)
    row["peak_memory_mib"], row["nfe"] = round(peak_tensor_memory_mib(run), 1), nfe
    grid = to_uint8(sample(*grid_inputs))
    if reference.frames > 1:  # each clip's frames back into one grey clip [H, W, frames] (`images.make_grid`)
        grid = grid.reshape(-1, reference.frames, *grid.shape[1:3]).transpose(0, 2, 3, 1)
    return Measurement(row, set_fids, grid)


def rounded(row: dict[str, float]) -> dict[str, float]:
    """Metrics at the precision metrics JSON keeps (KID is small: six places)."""
    return {key: round(value, 6 if key.startswith("kid_") else 4) for key, value in row.items()}
