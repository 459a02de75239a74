"""Random draws of one data-parallel step: every process draws the whole global batch and keeps its own slice,
so N processes see exactly the samples one process would see at N times the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Draws:
    """A random stream shared by all processes, sliced by rank (one process: plain draws from `generator`)."""

    generator: torch.Generator | None = None
    rank: int = 0
    world_size: int = 1

    def _mine(self, values: torch.Tensor) -> torch.Tensor:
        count = len(values) // self.world_size
        return values[self.rank * count : (self.rank + 1) * count]

    def randn(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        return self._mine(torch.randn((shape[0] * self.world_size, *shape[1:]), generator=self.generator))

    def randint(self, low: int, high: int, count: int) -> torch.Tensor:
        return self._mine(torch.randint(low, high, (count * self.world_size,), generator=self.generator))

    def rand(self, count: int) -> torch.Tensor:
        return self._mine(torch.rand(count * self.world_size, generator=self.generator))


def as_draws(rng: Draws | torch.Generator | None) -> Draws:
    """`rng` as Draws: a plain torch.Generator (or None, the global RNG) draws for one process."""
    return rng if isinstance(rng, Draws) else Draws(rng)
