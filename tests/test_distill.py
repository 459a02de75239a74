"""The DMD training loop: what one step changes, resumption, NaN stops, and data-parallel training."""

import os
import subprocess
import sys

import pytest
import torch
from distributed_distill import PAIRS_META, run_params, run_setup, tiny_teacher
from tiny_project import Killed, kill_at

from dmdlib.denoisers.sampling import heun_sample
from dmdlib.errors import DivergedError, ParamsError
from dmdlib.params import DistillParams
from dmdlib.training.distill import DistillInputs, distill
from dmdlib.training.pairs import PairReader, ShardPlan, generate_pairs
from dmdlib.training.regression import l2_loss

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    teacher = tiny_teacher()
    generate_pairs(folder, ShardPlan(8, 4), PAIRS_META, lambda z, y: heun_sample(teacher, z, 2, y), SHAPE, 3, 8)
    return folder


@pytest.fixture()
def pairs(pairs_folder):
    return PairReader(pairs_folder, PAIRS_META)


def params(**overrides):
    base = dict(steps=2, batch_size=2, reg_batch_size=2, warmup_steps=1, checkpoint_every=1, regression_loss="l2")
    return DistillParams(**{**base, **overrides})


def test_one_step_changes_generator_and_fake_but_not_the_teacher(tmp_path, pairs):
    teacher = tiny_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    generator, fake = distill(teacher, params(steps=1), tmp_path / "ck.pt", DistillInputs(pairs, l2_loss))
    start = tiny_teacher()
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not any(p.requires_grad for p in teacher.parameters())
    changed = lambda module: any(
        not torch.equal(a, b) for a, b in zip(module.state_dict().values(), start.state_dict().values())
    )
    assert changed(generator.denoiser) and changed(fake)


def test_resume_after_kill_repeats_the_uninterrupted_run(tmp_path, pairs):
    whole, _ = distill(
        tiny_teacher(), params(steps=4, checkpoint_every=2), tmp_path / "a.pt", DistillInputs(pairs, l2_loss)
    )

    with pytest.raises(Killed):  # after the checkpoint of step 2, before that of step 4
        distill(
            tiny_teacher(),
            params(steps=4, checkpoint_every=2),
            tmp_path / "b.pt",
            DistillInputs(pairs, l2_loss),
            on_step=kill_at(3),
        )
    steps = []
    resumed, _ = distill(
        tiny_teacher(),
        params(steps=4, checkpoint_every=2),
        tmp_path / "b.pt",
        DistillInputs(pairs, l2_loss),
        on_step=lambda step, metrics, generator: steps.append(step),
    )
    assert steps == [3, 4]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # same random streams: (seed, rank, step) decide them


def test_nan_stops_with_the_loss_and_step_named(tmp_path, pairs, monkeypatch):
    read = pairs.batch

    def with_nan(index):
        noise, target, labels = read(index)
        return noise, target.fill_(float("nan")), labels

    monkeypatch.setattr(pairs, "batch", with_nan)
    with pytest.raises(
        DivergedError,
        match=r"loss_reg is nan at step 1; stopped \(last good checkpoint: none\)\. The params that act on it: "
        r"distill\.generator_lr, distill\.lambda_reg, distill\.regression_loss;",  # #40: not always the learning rate
    ):
        distill(tiny_teacher(), params(steps=2, reg_batch_size=8), tmp_path / "ck.pt", DistillInputs(pairs, l2_loss))
    assert not (tmp_path / "ck.pt").exists()


def launch(tmp_path, repo_root, pairs_folder, *runs, port):
    """Two gloo processes of tests/distributed_distill.py: the return code and stderr."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(repo_root / "tests" / "distributed_distill.py"),
        str(tmp_path),
        str(pairs_folder),
        *runs,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    return result.returncode, result.stderr[-3000:]


@pytest.mark.slow
def test_ddp_and_fsdp(tmp_path, repo_root, pairs_folder):
    """Two gloo processes, each half the global batch: after 4 steps DDP's and FSDP's generators (also with the
    GAN term, LoRA adapters, a guidance-conditioned generator; DDP with the GAN term in micro-batches of one sample)
    equal the one-process run's within float tolerance; an FSDP run (with the GAN head) killed after its step-2
    checkpoint resumes to exactly the weights of the uninterrupted FSDP run."""
    runs = ("ddp", "fsdp", "ddp-gan", "fsdp-gan", "ddp-lora", "fsdp-lora", "ddp-guided", "fsdp-guided")
    runs += ("ddp-gan-micro",)
    code, err = launch(tmp_path, repo_root, pairs_folder, *(f"{name}:4:0" for name in runs), port=29518)
    assert code == 0, err
    start = tiny_teacher().state_dict()
    for name in runs:
        teacher, inputs = run_setup(name, PairReader(pairs_folder, PAIRS_META))
        one, _ = distill(teacher, run_params(name, 4, 1), tmp_path / f"one-{name}.pt", inputs)
        assert any(not torch.allclose(one.state_dict()[f"denoiser.{k}"], v) for k, v in start.items()), (
            name
        )  # it trained
        rank0, rank1 = (torch.load(tmp_path / f"rank{r}-{name}-4.pt") for r in (0, 1))
        for key, value in one.state_dict().items():
            assert torch.equal(rank0[key], rank1[key]), (name, key)
            assert torch.allclose(rank0[key], value, atol=1e-5, rtol=1e-4), (name, key)

    whole = torch.load(tmp_path / "rank0-fsdp-gan-4.pt")
    (tmp_path / "fsdp-gan.pt").unlink()
    code, _ = launch(
        tmp_path, repo_root, pairs_folder, "fsdp-gan:4:3", port=29519
    )  # dies after the checkpoint of step 2
    assert code != 0 and not (tmp_path / "rank0-fsdp-gan-4.pt").unlink() and (tmp_path / "fsdp-gan.pt").exists()
    code, err = launch(tmp_path, repo_root, pairs_folder, "fsdp-gan:4:0", port=29520)
    assert code == 0, err
    resumed = torch.load(tmp_path / "rank0-fsdp-gan-4.pt")
    for name, value in whole.items():
        assert torch.equal(resumed[name], value), name


@pytest.mark.parametrize("micro_batch_size", [1, 2])
def test_micro_batches_add_up_to_the_whole_batch(tmp_path, pairs, micro_batch_size):
    """Gradient accumulation: a step of 4 samples and 4 pairs in micro-batches (DM, regression, GAN head and two
    fake updates, the second on fresh samples) trains the generator and the fake denoiser as one batch of 4 does."""
    base = dict(batch_size=4, reg_batch_size=4, steps=3, gan_generator_weight=3e-3, fake_steps=2, dm_weight=1.0)
    runs = {}
    for name, extra in (("whole", {}), ("micro", {"micro_batch_size": micro_batch_size})):
        teacher, inputs = run_setup("ddp-gan", pairs)
        runs[name] = distill(teacher, params(**base, **extra), tmp_path / f"{name}.pt", inputs)
    start = tiny_teacher().state_dict()
    (whole_generator, whole_fake), (generator, fake) = runs["whole"], runs["micro"]
    assert any(not torch.allclose(whole_fake.state_dict()[k], v) for k, v in start.items())  # it trained
    for whole, accumulated in ((whole_generator, generator), (whole_fake, fake)):
        for key, value in whole.state_dict().items():
            assert torch.allclose(accumulated.state_dict()[key], value, atol=1e-5, rtol=1e-4), key


def test_uneven_micro_batches_are_refused(tmp_path):
    with pytest.raises(ParamsError, match=r"distill.micro_batch_size 3 does not divide the per-process share 4"):
        distill(tiny_teacher(), params(batch_size=4, micro_batch_size=3), tmp_path / "ck.pt")
    with pytest.raises(ParamsError, match=r"distill.reg_batch_size 3 does not split into 2 equal parts"):
        distill(tiny_teacher(), params(batch_size=4, reg_batch_size=3, micro_batch_size=2), tmp_path / "ck.pt")


def test_dm_only_ignores_the_regression_warm_up(tmp_path):
    teacher = tiny_teacher()
    generator, _ = distill(
        teacher, params(steps=2, lambda_reg=0.0, reg_batch_size=0, regression_warmup_steps=5), tmp_path / "ck.pt"
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(generator.denoiser.state_dict().values(), teacher.state_dict().values())
    )


def test_regression_warm_up_then_both_terms(tmp_path, pairs):
    """The first regression_warmup_steps steps have no DM term (its loss is logged as 0), later ones do."""
    losses = []
    distill(
        tiny_teacher(),
        params(steps=3, regression_warmup_steps=2, dm_weight=1.0),
        tmp_path / "ck.pt",
        DistillInputs(pairs, l2_loss),
        on_step=lambda step, metrics, generator: losses.append((metrics["loss_dm"], metrics["loss_reg"])),
    )
    assert [dm == 0 for dm, _ in losses] == [True, True, False] and all(reg > 0 for _, reg in losses)


def test_the_library_resumes_only_a_checkpoint_of_the_same_settings(tmp_path, pairs):
    """distill() itself (not only the stage's claim) refuses a checkpoint of other settings: it starts from step 0."""
    inputs = DistillInputs(pairs, l2_loss)
    distill(tiny_teacher(), params(steps=2), tmp_path / "ck.pt", inputs, settings={"distill": {"fake_lr": 1}})
    steps = []
    record = lambda step, metrics, generator: steps.append(step)  # noqa: E731
    distill(
        tiny_teacher(),
        params(steps=3),
        tmp_path / "ck.pt",
        inputs,
        settings={"distill": {"fake_lr": 1}},
        on_step=record,
    )
    assert steps == [3]
    steps.clear()
    distill(
        tiny_teacher(),
        params(steps=3),
        tmp_path / "ck.pt",
        inputs,
        settings={"distill": {"fake_lr": 2}},
        on_step=record,
    )
    assert steps == [1, 2, 3]
