"""The DMD training loop: checkpointed, resumable, data-parallel across processes by DDP or FSDP (paper Algorithm 1)."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dmdlib.data.checkpoints import CORRUPT_CHECKPOINT, checkpoint_identity
from dmdlib.data.io import atomic_output, load_tensors
from dmdlib.data.prepared import PreparedImageReader
from dmdlib.denoisers import Denoiser, GuidedDenoiser, ScaleConditionedDenoiser, denoise_capturing, trainable_copy
from dmdlib.denoisers.conditions import Conditions
from dmdlib.errors import DataError, DivergedError, ParamsError
from dmdlib.generators.draws import Draws
from dmdlib.generators.generator import Generator
from dmdlib.networks.ema import ema_update
from dmdlib.params import DistillParams
from dmdlib.training.dmd import (
    GAN,
    GeneratorBatch,
    Pairs,
    RealBatch,
    Update,
    fake_denoiser_loss,
    fake_trained,
    generator_loss,
)
from dmdlib.training.gan import GANHead
from dmdlib.training.memory import adamw, add_lora, merge_lora, run_in_bfloat16
from dmdlib.training.objectives import ObjectiveParts, RegressionLoss, Term, generator_terms
from dmdlib.training.pairs import PairReader
from dmdlib.training.parallel import (
    Strategy,
    distribute,
    full_optimizer_state,
    full_state,
    load_full_state,
    load_optimizer_state,
    reshard,
)

log = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float], Generator], None]  # (step, losses, generator or EMA)


@dataclass
class Processes:
    """Where this process runs among the others of the default process group (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # e.g. accelerate's, for bf16


@dataclass
class DistillInputs:
    """What distillation uses besides the teacher; every field is optional.

    `real_denoiser`: the teacher itself unless given (e.g. a `GuidedDenoiser` for classifier-free
    guidance, needed for params.guidance_range). `conditions`: how to draw `cond` (default: the
    teacher's classes). `real_images` (all of them, class labels as cond) feed the GAN head;
    `pair_guidance` is the scale the pairs were made with.
    """

    pairs: PairReader | None = None
    regression_loss: RegressionLoss | None = None
    real_denoiser: Denoiser | None = None
    conditions: Conditions | None = None
    real_images: RealBatch | PreparedImageReader | None = None
    pair_guidance: float = 1.0


@dataclass
class _Run:
    """The networks and optimizers of one distillation, as checkpointed."""

    generator: Generator
    fake_denoiser: Denoiser
    ema: Generator | None
    generator_update: Update
    fake_update: Update
    gan: GAN | None
    real_denoiser: Denoiser
    terms: dict[str, Term]  # the objective's loss terms, each on from its start step
    conditions: Conditions | None  # what `cond` the generator is trained on
    strategy: Strategy | None = None  # how processes share generator and fake denoiser; None for one process
    unsharded: Generator | None = None  # under FSDP: a CPU generator the gathered weights are loaded into

    @functools.cached_property
    def blamed_keys(self) -> dict[str, tuple[str, ...]]:
        """For each figure a step logs, the distill params that act on it (once per run, not per step)."""
        return _blamed_keys(self.terms)


def step_rng(seed: int, step: int) -> torch.Generator:
    """The random stream of one step, shared by all processes (each keeps its slice of every draw, `Draws`):
    a function of (seed, step) only, so resuming repeats it and the process count does not change it."""
    return torch.Generator().manual_seed(seed * 1_000_003 * 10_000_019 + step)


def dm_sigma_fractions(grid: torch.Tensor, params: DistillParams) -> tuple[float, float]:
    """The grid range for DM noise levels: params' fractions, capped at dm_sigma_max when given."""
    low, high = params.dm_sigma_fractions
    if params.dm_sigma_max is not None:
        high = min(high, int(torch.searchsorted(grid, torch.tensor(params.dm_sigma_max), right=True)) / len(grid))
    if high <= low:
        raise ParamsError(
            f"distill.dm_sigma_max leaves no noise level of the grid ({float(grid[0]):.3g} to "
            f"{float(grid[-1]):.3g}) between the {low:.0%} and {high:.0%} points"
        )
    return low, high


def distill(
    teacher: Denoiser,
    params: DistillParams,
    checkpoint: str | os.PathLike,
    inputs: DistillInputs | None = None,
    *,
    settings: dict | None = None,
    processes: Processes | None = None,
    on_step: StepCallback | None = None,
) -> tuple[Generator, Denoiser]:
    """Train a generator from `teacher` (Algorithm 1); return (generator or its EMA, fake denoiser).

    Generator and fake denoiser start as copies of the (unguided) teacher. Resumes from `checkpoint`
    when it was made with `settings` (what the run learns from: `dmdlib.data.io.claim_checkpoint`). A
    non-finite loss stops the run, keeping the last good checkpoint. Several processes (an initialised
    default process group) split each step's global batch (each its share in micro-batches of
    params.micro_batch_size, gradients accumulated) and share generator and fake denoiser by
    params.data_parallel. params.real_denoiser_bf16 casts the real denoiser (the teacher, unless `inputs` give one)
    in place.
    """
    processes, inputs, checkpoint = processes or Processes(), inputs or DistillInputs(), Path(checkpoint)
    rounds = micro_batches(params, processes.world_size)
    run, identity = _build(teacher, params, inputs, processes), checkpoint_identity(settings or {}, params.steps)
    start = _resume(checkpoint, identity["fingerprint"], run)
    progress = tqdm(
        range(start, params.steps),
        initial=start,
        total=params.steps,
        desc="distill",
        unit="step",
        disable=processes.rank != 0,
        mininterval=1.0,
    )
    for step in progress:
        streams = [  # one per micro-batch: the step's whole stream, sliced to its part
            Draws(step_rng(params.seed, step), processes.rank * rounds + micro, processes.world_size * rounds)
            for micro in range(rounds)
        ]
        for update in (run.generator_update, run.fake_update):  # linear learning-rate warm-up
            for group in update.optimizer.param_groups:
                group["lr"] = group["base_lr"] * min(1.0, (step + 1) / max(1, params.warmup_steps))
        active = {name: term for name, term in run.terms.items() if step >= term.start_step}
        batches, results = [], []
        run.generator_update.begin()
        for rng in streams:  # lines 3-10: z, cond and pairs, then the generator update, a micro-batch at a time
            batches.append(batch := _draw_batch(run, params, inputs, rng, processes.device))
            with processes.autocast():
                loss, result = generator_loss(run.generator, batch, rng, terms=active)
            run.generator_update.add(loss, 1 / rounds)
            results.append(result)
        run.generator_update.finish(run.generator)
        metrics = {key: 0.0 for name, term in run.terms.items() for key in (f"loss_{name}", *term.reports)}
        metrics.update(_mean([result.metrics for result in results]))
        if any(term.uses_fake for term in run.terms.values()):  # lines 11-14: fake-score update(s)
            metrics.update(_fake_steps(run, params, batches, [result.x for result in results], streams, processes))
        _stop_if_diverged(metrics, run.blamed_keys, step, checkpoint, params.checkpoint_every)
        if run.ema is not None:
            ema_update(run.generator, run.ema, params.ema_decay)
        done = step + 1
        progress.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
        if done % params.checkpoint_every == 0 or done == params.steps:
            _save(checkpoint, done, identity, run, processes.rank)
        if run.strategy == "fsdp" and (done % params.sample_every == 0 or done == params.steps):
            _gather(run)  # every process takes part; the callback samples from the gathered copy
        if on_step is not None:
            on_step(done, metrics, _shown(run))
    final = _shown(run) if run.strategy != "fsdp" else _gather(run)
    if params.generator_lora_rank is not None:
        merge_lora(final.denoiser)
    return final.eval().requires_grad_(False), run.fake_denoiser.eval()


def _shown(run: _Run) -> Generator:
    """The generator that is sampled and saved: the EMA if any; under FSDP its gathered copy."""
    if run.strategy == "fsdp":
        return run.unsharded
    return run.ema if run.ema is not None else run.generator


def _gather(run: _Run) -> Generator:
    """Load the whole weights of the (EMA) generator from all shards into the unsharded copy (FSDP)."""
    source = run.ema if run.ema is not None else run.generator
    run.unsharded.load_state_dict(full_state(source, "fsdp", everywhere=True))
    return run.unsharded


def _build(teacher: Denoiser, params: DistillParams, inputs: DistillInputs, processes: Processes) -> _Run:
    """Generator, fake denoiser, EMA, GAN head and optimizers with the memory and data-parallel options,
    each checked against the teacher and params."""
    device = processes.device
    strategy = params.data_parallel if processes.world_size > 1 else None
    teacher = teacher.to(device)
    real_denoiser = (inputs.real_denoiser or teacher).to(device)
    if params.guidance_range is not None and not isinstance(real_denoiser, GuidedDenoiser):
        raise ParamsError(
            "distill.guidance_range needs a teacher that serves classifier-free guidance "
            "(the default teacher: teacher.train.label_dropout > 0)"
        )
    conditions = inputs.conditions or Conditions.of(teacher)
    torch.manual_seed(params.seed)  # initial weights of the guidance embeddings and the GAN head
    generator = Generator.from_teacher(teacher, params.generator_sigmas, params.guidance_range).to(device)
    if generator.sigma > teacher.sigma_max:
        raise ParamsError(
            f"distill.generator_sigmas starts at {generator.sigma}, above the teacher's sigma_max {teacher.sigma_max}"
        )
    fake_denoiser = trainable_copy(teacher)
    if params.fake_lora_rank is not None:  # before the scale embedding, which trains whole
        add_lora(fake_denoiser, params.fake_lora_rank, "distill.fake_lora_rank")
    if params.guidance_range is not None:  # D_fake must model G's distribution at each scale, not their mixture
        fake_denoiser = ScaleConditionedDenoiser(fake_denoiser, *params.guidance_range)
    gan = None
    if params.gan_generator_weight > 0:
        if inputs.real_images is None:
            raise ParamsError("distill.gan_generator_weight > 0 needs real images (the prepared data) for the GAN head")
        head = make_gan_head(fake_denoiser, conditions, device)
        gan = GAN(head, params.gan_generator_weight, params.gan_head_weight, inputs.real_images)
    if params.generator_lora_rank is not None:
        add_lora(generator.denoiser, params.generator_lora_rank, "distill.generator_lora_rank")
    if params.gradient_checkpointing:
        generator.denoiser.enable_gradient_checkpointing()
        fake_denoiser.enable_gradient_checkpointing()
    ema = copy.deepcopy(generator).requires_grad_(False) if params.ema_decay is not None else None
    unsharded = copy.deepcopy(ema or generator).cpu() if strategy == "fsdp" else None
    if params.real_denoiser_bf16:  # after the copies, which train in full precision
        run_in_bfloat16(real_denoiser)
    if strategy is not None:  # before the optimizers: FSDP replaces the parameters by their shards
        sharded_ema = ema is not None and strategy == "fsdp"  # updated shard by shard from the generator's
        for module in (
            *_units(generator),
            fake_denoiser,
            *(_units(ema) if sharded_ema else []),
            *([gan.head] if gan else []),
        ):
            distribute(module, strategy, device)
    if params.compile:
        generator.denoiser.compile()
        fake_denoiser.compile()
    fake_parameters = [*fake_denoiser.parameters(), *(gan.head.parameters() if gan is not None else [])]
    parts = ObjectiveParts(
        real_denoiser,
        fake_denoiser,
        dm_sigma_fractions(real_denoiser.sigma_grid(), params),
        inputs.regression_loss if inputs.pairs is not None and params.lambda_reg > 0 else None,
        gan.head if gan is not None else None,
    )
    return _Run(
        generator,
        fake_denoiser,
        ema,
        _update(generator.parameters(), params.generator_lr, params, device),
        _update(fake_parameters, params.fake_lr, params, device),
        gan,
        real_denoiser,
        generator_terms(params.objective, params, parts),
        conditions,
        strategy,
        unsharded,
    )


def _units(generator: Generator) -> list[torch.nn.Module]:
    """The generator's modules that are called by themselves: its denoiser and its guidance input's network."""
    return [generator.denoiser, *([generator.guidance.net] if generator.guidance is not None else [])]


def _update(parameters, lr: float, params: DistillParams, device: torch.device) -> Update:
    """AdamW (paper: weight decay 0.01) on the trainable parameters, with clipping; `base_lr` is the rate after
    warm-up."""
    trainable = [parameter for parameter in parameters if parameter.requires_grad]
    eight_bit = params.optimizer == "adamw8bit"
    optimizer = adamw([{"params": trainable, "base_lr": lr}], lr, params.betas, params.weight_decay, eight_bit, device)
    return Update(optimizer, params.max_grad_norm)


def _draw_batch(run: _Run, params: DistillParams, inputs: DistillInputs, rng: Draws, device) -> GeneratorBatch:
    """This step's noise, cond, ladder step, guidance scales and pairs, in that order from `rng`: `rng`'s part of the
    global batch.

    Draws happen only when their option is on, so the default's random stream is unchanged.
    """
    conditions, count = run.conditions, params.batch_size // rng.parts
    z = rng.randn((count, *run.generator.denoiser.sample_shape)).to(device)
    cond = None
    if conditions is not None:
        cond = conditions.lookup(rng.randint(0, conditions.count, count)).to(device)
    ladder = run.generator.sigmas
    step_index = (
        int(torch.randint(0, len(ladder), (), generator=rng.generator)) if len(ladder) > 1 else 0
    )  # one for all
    scale = None
    if params.guidance_range is not None:
        low, high = params.guidance_range
        scale = (low + (high - low) * rng.rand(count)).to(device)
        run.real_denoiser.scale = run.fake_denoiser.scale = scale
    pairs = None
    if inputs.pairs is not None and any(term.uses_pairs for term in run.terms.values()):
        noise, target, labels = inputs.pairs.batch(
            rng.randint(0, len(inputs.pairs), params.reg_batch_size // rng.parts)
        )
        pair_cond = conditions.lookup(labels).to(device) if conditions is not None else None
        pair_scale = torch.full((len(labels),), inputs.pair_guidance, device=device) if scale is not None else None
        pairs = Pairs(noise.to(device), target.to(device), pair_cond, pair_scale)
    return GeneratorBatch(z, cond, step_index, scale, pairs)


def _fake_steps(
    run: _Run,
    params: DistillParams,
    batches: list[GeneratorBatch],
    samples: list[torch.Tensor],
    streams: list[Draws],
    processes: Processes,
) -> dict[str, float]:
    """params.fake_steps fake-denoiser updates (DMD2's two time-scales) and their mean losses, a micro-batch at a time:
    the first on this step's generator samples, each later one on fresh samples of the updated generator (new noise
    and cond, the same ladder step and guidance scales), as DMD2 makes new samples for every fake-score update."""
    fake_losses, head_losses = [], []
    trained = fake_trained(run.fake_denoiser, run.gan)
    for update in range(params.fake_steps):
        run.fake_update.begin()
        for micro, (batch, rng) in enumerate(zip(batches, streams)):
            if batch.scale is not None:  # the guidance scales of this micro-batch, as its generator loss had them
                run.real_denoiser.scale = run.fake_denoiser.scale = batch.scale
            with processes.autocast():
                x, cond = (samples[micro], batch.cond) if update == 0 else _fresh_samples(run, params, batch, rng)
                loss, fake_loss, head_loss = fake_denoiser_loss(run.fake_denoiser, x, cond, rng, gan=run.gan)
            run.fake_update.add(loss, 1 / len(streams))
            fake_losses.append(fake_loss)
            head_losses.append(head_loss)
        run.fake_update.finish(trained)
    metrics = {"loss_fake": sum(fake_losses) / len(fake_losses)}
    if run.gan is not None:
        metrics["loss_gan_head"] = sum(head_losses) / len(head_losses)
    return metrics


@torch.no_grad()
def _fresh_samples(
    run: _Run, params: DistillParams, batch: GeneratorBatch, rng: Draws
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New generator samples (and their cond) at this step's ladder step and guidance scales, without gradients:
    `rng`'s part of a global batch."""
    generator, conditions, count = run.generator, run.conditions, params.batch_size // rng.parts
    device = batch.z.device
    z = rng.randn((count, *generator.denoiser.sample_shape)).to(device)
    cond = conditions.lookup(rng.randint(0, conditions.count, count)).to(device) if conditions is not None else None
    x = generator.noisy_input(z, cond, batch.step_index, batch.scale, rng)
    x = generator.denoise(x, generator.sigmas[batch.step_index], cond, batch.scale)
    if run.strategy == "fsdp":  # no backward follows this forward
        for unit in _units(generator):
            reshard(unit)
    return x, cond


def micro_batches(params: DistillParams, world_size: int) -> int:
    """How many micro-batches each of `world_size` processes splits its share of the global batch into (1 without
    params.micro_batch_size); every batch must split evenly."""
    share = params.batch_size // world_size
    rounds = 1 if params.micro_batch_size is None else share // params.micro_batch_size
    parts = world_size * max(rounds, 1)
    problems = [
        f"distill.{key} {value} does not split into {parts} equal parts ({world_size} process(es) x {rounds} "
        "micro-batch(es))"
        for key, value in (("batch_size", params.batch_size), ("reg_batch_size", params.reg_batch_size))
        if value % parts or (key == "batch_size" and value < parts)
    ]
    if params.micro_batch_size is not None and params.micro_batch_size * rounds != share:
        problems.append(
            f"distill.micro_batch_size {params.micro_batch_size} does not divide the per-process share "
            f"{share} of distill.batch_size {params.batch_size}"
        )
    if problems:
        raise ParamsError("; ".join(problems) + ": choose sizes that divide evenly")
    return rounds


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's mean over the micro-batches (each loss a mean over equal micro-batches: the step's mean)."""
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def _blamed_keys(terms: dict[str, Term]) -> dict[str, tuple[str, ...]]:
    """For each figure a step logs, the distill params that act on it: what a diverged run's message names."""
    keys = {"loss_fake": ("fake_lr",), "loss_gan_head": ("gan_head_weight", "fake_lr")}
    for name, term in terms.items():
        for figure in (f"loss_{name}", *term.reports):
            keys[figure] = ("generator_lr", *term.keys)
    return keys


def _stop_if_diverged(
    metrics: dict[str, float], keys: dict[str, tuple[str, ...]], step: int, checkpoint: Path, checkpoint_every: int
) -> None:
    for name, value in metrics.items():
        if not torch.isfinite(torch.tensor(value)):
            kept = f"step {step // checkpoint_every * checkpoint_every}" if checkpoint.exists() else "none"
            raise DivergedError(
                f"distill: {name} is {value} at step {step + 1}; stopped (last good checkpoint: {kept}). The params "
                f"that act on it: {', '.join(f'distill.{key}' for key in keys.get(name, ('generator_lr', 'fake_lr')))}"
                "; a lower learning rate or weight, or a longer distill.warmup_steps, is the usual cure."
            )


def make_gan_head(fake_denoiser: Denoiser, conditions: Conditions | None, device) -> GANHead:
    """A GAN head sized to the fake denoiser's bottleneck (found by one forward)."""
    x = torch.zeros((1, *fake_denoiser.sample_shape), device=device)
    cond = conditions.lookup(torch.zeros(1, dtype=torch.long)).to(device) if conditions is not None else None
    with torch.no_grad():
        _, features = denoise_capturing(fake_denoiser, fake_denoiser.bottleneck(), x, fake_denoiser.sigma_max, cond)
    return GANHead(features.shape[1]).to(device)


def _save(path: Path, step: int, identity: dict[str, str], run: _Run, rank: int) -> None:
    """Write the checkpoint from rank 0; under FSDP every process first gives its shards to the whole state."""
    strategy = run.strategy
    state = {
        "step": step,
        **identity,
        "generator": full_state(run.generator, strategy),
        "fake_denoiser": full_state(run.fake_denoiser, strategy),
        "generator_optimizer": full_optimizer_state(run.generator, run.generator_update.optimizer, strategy),
        "fake_optimizer": full_optimizer_state(_fake_trained(run), run.fake_update.optimizer, strategy),
        "ema": full_state(run.ema, strategy) if run.ema is not None else {},
        "gan_head": full_state(run.gan.head, strategy) if run.gan is not None else {},
    }
    if rank == 0:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:  # a Python file: a failed write is an OSError
            torch.save(state, handle)


def _fake_trained(run: _Run) -> torch.nn.Module:
    """What the fake step's optimizer trains: the fake denoiser and, with the GAN term, the head."""
    return torch.nn.ModuleList([run.fake_denoiser, run.gan.head]) if run.gan is not None else run.fake_denoiser


def _resume(path: Path, fingerprint: str, run: _Run) -> int:
    """Load a matching checkpoint into every process (each keeps its shards under FSDP); the step to go on from."""
    if not path.is_file():
        return 0
    state = load_tensors(path, DataError, CORRUPT_CHECKPOINT)
    if state.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: it was made with other params, teacher or pairs", path)
        return 0
    strategy = run.strategy
    load_full_state(run.generator, state["generator"], strategy)
    load_full_state(run.fake_denoiser, state["fake_denoiser"], strategy)
    load_optimizer_state(run.generator, run.generator_update.optimizer, state["generator_optimizer"], strategy)
    load_optimizer_state(_fake_trained(run), run.fake_update.optimizer, state["fake_optimizer"], strategy)
    if run.ema is not None:
        load_full_state(run.ema, state["ema"], strategy)
    if run.gan is not None:
        load_full_state(run.gan.head, state["gan_head"], strategy)
    log.info("resuming distillation from %s at step %d", path, state["step"])
    return int(state["step"])
