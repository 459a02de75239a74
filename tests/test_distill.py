"""The DMD training loop: what one step changes, resumption, NaN stops, and data-parallel training."""

import os
import subprocess
import sys

import pytest
import torch

from dmdlib.distill import DistillInputs, distill
from dmdlib.errors import DivergedError
from dmdlib.pairs import PairDataset, ShardPlan, generate_pairs
from dmdlib.params import DistillParams
from dmdlib.regression import l2_loss
from dmdlib.sampling import heun_sample
from dmdlib.teachers import build_kdiffusion, kdiffusion_config

SHAPE = (1, 8, 8)


def tiny_teacher():
    torch.manual_seed(0)
    return build_kdiffusion(kdiffusion_config(1, 8, [8, 8], [1, 1], 16, 3, 0.5, 0.002, 80.0)).requires_grad_(False)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    teacher = tiny_teacher()
    meta = {"teacher": "t", "sampler": "heun", "steps": 2, "guidance": 1.0, "shape": list(SHAPE), "dtype": "float32"}
    generate_pairs(folder, ShardPlan(8, 8), meta, lambda z, y: heun_sample(teacher, z, 2, y), SHAPE, 3, 8)
    return PairDataset(folder, meta)


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
    changed = lambda module: any(not torch.equal(a, b) for a, b in zip(module.state_dict().values(), start.state_dict().values()))
    assert changed(generator.denoiser) and changed(fake)


def test_resume_after_kill_repeats_the_uninterrupted_run(tmp_path, pairs):
    whole, _ = distill(tiny_teacher(), params(steps=4, checkpoint_every=2), tmp_path / "a.pt", DistillInputs(pairs, l2_loss))

    class Killed(Exception):
        pass

    def kill(step, metrics, generator):
        if step == 3:  # after the checkpoint of step 2, before that of step 4
            raise Killed

    with pytest.raises(Killed):
        distill(tiny_teacher(), params(steps=4, checkpoint_every=2), tmp_path / "b.pt", DistillInputs(pairs, l2_loss), on_step=kill)
    steps = []
    resumed, _ = distill(tiny_teacher(), params(steps=4, checkpoint_every=2), tmp_path / "b.pt", DistillInputs(pairs, l2_loss),
                         on_step=lambda step, metrics, generator: steps.append(step))
    assert steps == [3, 4]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # same random streams: (seed, rank, step) decide them


def test_nan_stops_with_the_loss_and_step_named(tmp_path, pairs):
    pairs.target[0] = float("nan")
    try:
        with pytest.raises(DivergedError, match=r"loss_reg is nan at step 1; stopped \(last good checkpoint: none\)"):
            distill(tiny_teacher(), params(steps=2, reg_batch_size=8), tmp_path / "ck.pt", DistillInputs(pairs, l2_loss))
    finally:
        pairs.target[0] = 0.0
    assert not (tmp_path / "ck.pt").exists()


def test_two_gloo_processes_hold_identical_generators(tmp_path, repo_root):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
               str(repo_root / "tests" / "distributed_distill.py"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    start = tiny_teacher().state_dict()
    assert any(not torch.equal(rank0[f"denoiser.{k}"], v) for k, v in start.items())  # it trained
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name



def test_dm_only_ignores_the_regression_warm_up(tmp_path):
    teacher = tiny_teacher()
    generator, _ = distill(teacher, params(steps=2, lambda_reg=0.0, reg_batch_size=0, regression_warmup_steps=5), tmp_path / "ck.pt")
    assert any(not torch.equal(a, b) for a, b in zip(generator.denoiser.state_dict().values(), teacher.state_dict().values()))
