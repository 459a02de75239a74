"""What distillation watches while it trains (main process only): curves, sample grids, diversity."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch

from dmdlib.evaluation.classifier import FeatureClassifier
from dmdlib.evaluation.diversity import measure_diversity
from dmdlib.generators.generator import Generator

log = logging.getLogger("distill")


class Log(Protocol):
    """What the monitor logs through: a dvclive `Live`, or anything with its `step` and `log_metric`."""

    step: int

    def log_metric(self, name: str, value: float) -> None: ...


class DistillMonitor:
    """Logs the losses every step (through `live`); every `sample_every` steps saves a fixed-noise grid and, for
    pixel teachers, measures diversity and warns on collapse."""

    def __init__(
        self,
        live: Log,
        sample_every: int,
        last_step: int,
        save_samples: Callable[[str, Generator], None],
        diversity_samples: Callable[[Generator], torch.Tensor] | None = None,
        real_images: torch.Tensor | None = None,
        classifier: FeatureClassifier | None = None,
        data_shares: torch.Tensor | None = None,
    ):
        self.live = live
        self.sample_every, self.last_step, self.save_samples = sample_every, last_step, save_samples
        self.diversity_samples, self.real_images = diversity_samples, real_images
        self.classifier, self.data_shares = classifier, data_shares
        self.start_fid: float | None = None  # the initial generator's feature FID, to tell whether training helped
        self.collapse_warned = False  # once during the run, then at its end if still so: not at every grid

    def measure_start(self, generator: Generator) -> None:
        """The initial generator's diversity and feature FID: what the last step is compared with."""
        if self.diversity_samples is not None:
            self.start_fid = self._measure(generator).feature_fid

    def __call__(self, step: int, metrics: dict[str, float], generator: Generator) -> None:
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        if step % self.sample_every and step != self.last_step:
            return
        self.save_samples(f"step-{step:06d}.png", generator)
        if self.diversity_samples is None:
            return
        diversity = self._measure(generator)
        self.live.step = step
        self.live.log_metric("diversity/spread", diversity.spread)
        if diversity.class_shares is not None:
            self.live.log_metric("diversity/min_class_share", min(diversity.class_shares))
        if diversity.feature_fid is not None:
            self.live.log_metric("diversity/feature_fid", diversity.feature_fid)
        message = diversity.warning()
        if message and (step == self.last_step or not self.collapse_warned):
            log.warning(
                "step %d: %s%s",
                step,
                message,
                "" if step == self.last_step else " (said once; diversity/* in the training log follows it)",
            )
            self.collapse_warned = True
        if step == self.last_step and self.start_fid is not None and diversity.feature_fid > self.start_fid:
            log.warning(
                "the generator ends worse than it started (feature FID %.3f against %.3f at step 0, 500 samples); "
                "try a lower distill.generator_lr, more distill.regression_warmup_steps, or a lower first sigma in "
                "distill.generator_sigmas",
                diversity.feature_fid,
                self.start_fid,
            )

    def _measure(self, generator: Generator):
        return measure_diversity(self.diversity_samples(generator), self.real_images, self.classifier, self.data_shares)
