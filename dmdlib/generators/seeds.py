"""The seeded inputs every model is sampled from, and the teacher's multi-step sampler over them.

A sample depends only on its seed: the noise and the condition id come from one RNG seeded with it (EDM's habit), so
batch size, shard and process count never change which sample a seed makes.
"""

from __future__ import annotations

import torch

from dmdlib.denoisers import Denoiser
from dmdlib.denoisers.conditions import Conditions
from dmdlib.denoisers.sampling import flow_sample, heun_sample, make_scheduler, scheduler_sample
from dmdlib.errors import ParamsError
from dmdlib.params import PairsParams

GRID_SEED = 2_000_000  # fixed noise of every sample grid: seeds GRID_SEED + i


def seeded_inputs(seed: int, shape: tuple[int, ...], num_conditions: int) -> tuple[torch.Tensor, int]:
    """The noise z and condition id (class label or prompt index; -1 if unconditional) of one seed, from its own RNG."""
    rng = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=rng)
    label = int(torch.randint(0, num_conditions, (1,), generator=rng)) if num_conditions else -1
    return noise, label


def seeded_batch(first_seed: int, count: int, shape: tuple[int, ...], num_conditions: int):
    """(noise, condition ids or None) of seeds first_seed .. first_seed + count - 1 (`seeded_inputs`): the inputs
    `evaluate` measures every model on, and `sample` draws."""
    inputs = [seeded_inputs(first_seed + i, shape, num_conditions) for i in range(count)]
    noise = torch.stack([z for z, _ in inputs])
    return noise, (torch.tensor([label for _, label in inputs]) if num_conditions else None)


def fixed_inputs(shape, conditions: Conditions | None, count: int, first_seed: int = GRID_SEED):
    """Seeded noise and cond (condition ids cycling 0..K-1) shared by every grid, so pictures compare sample by
    sample."""
    noise = torch.stack([seeded_inputs(first_seed + i, shape, 0)[0] for i in range(count)])
    cond = conditions.lookup(torch.arange(count) % conditions.count) if conditions is not None else None
    return noise, cond


def make_sampler(
    real_denoiser: Denoiser,
    params: PairsParams,
    conditions: Conditions | None = None,
    device: torch.device | None = None,
):
    """The ODE solver named in params, as sample(noise, condition ids) -> image (or latent) on the CPU.

    The solver runs on `device` (the real denoiser must be there already); inputs may come from the CPU.
    """
    device = device or torch.device("cpu")
    lookup = (lambda ids: None) if conditions is None else (lambda ids: conditions.lookup(ids.cpu()).to(device))
    if params.sampler == "heun":
        solve = lambda noise, cond: heun_sample(real_denoiser, noise, params.steps, cond)  # noqa: E731
    elif real_denoiser.scheduler_config is None:
        raise ParamsError(
            f"pairs.sampler {params.sampler!r} needs a discrete-time (diffusers) teacher; use 'heun' for this one"
        )
    else:
        scheduler = make_scheduler(params.sampler, real_denoiser.scheduler_config, real_denoiser.flow)
        sample = flow_sample if real_denoiser.flow else scheduler_sample
        solve = lambda noise, cond: sample(real_denoiser, noise, scheduler, params.steps, cond)  # noqa: E731
    return lambda noise, ids: solve(noise.to(device), lookup(ids)).cpu()
