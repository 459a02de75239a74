"""Random draws of one step: every process (and every micro-batch of it) draws the whole global batch and keeps its
own part, so N processes of M micro-batches see exactly the samples one process would see in one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Draws:
    """A random stream shared by all parts of a step's batch, sliced to `part` of `parts` (process rank x micro-batch
    count + micro-batch; one part: plain draws from `generator`). Counts asked for are per part."""

    generator: torch.Generator | None = None
    part: int = 0
    parts: int = 1

    def _mine(self, values: torch.Tensor) -> torch.Tensor:
        count = len(values) // self.parts
        return values[self.part * count : (self.part + 1) * count]

    def randn(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        return self._mine(torch.randn((shape[0] * self.parts, *shape[1:]), generator=self.generator))

    def randint(self, low: int, high: int, count: int) -> torch.Tensor:
        return self._mine(torch.randint(low, high, (count * self.parts,), generator=self.generator))

    def rand(self, count: int) -> torch.Tensor:
        return self._mine(torch.rand(count * self.parts, generator=self.generator))


def as_draws(rng: Draws | torch.Generator | None) -> Draws:
    """`rng` as Draws: a plain torch.Generator (or None, the global RNG) draws for one part."""
    return rng if isinstance(rng, Draws) else Draws(rng)
