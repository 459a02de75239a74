"""The stages on a GPU (skipped without one): the CPU's results up to float rounding, and bf16 distillation."""

import json

import pytest
import torch
from tiny_models import TINY_KDIFFUSION, tiny_kdiffusion
from tiny_project import pipeline_params, run_stages, write_tiny_project

from dmdlib.denoisers.sampling import heun_sample
from dmdlib.generators.generator import load_generator
from dmdlib.params import PairsParams, TeacherTrainParams
from dmdlib.teachers.reference import read_teacher
from dmdlib.teachers.training import train_teacher
from dmdlib.training.pairs import PairReader, pair_metadata

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each stage CLI runs in its own process in real use; here one process runs them with fp32 and bf16 in turn."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # what accelerate's own AccelerateTestCase does between tests
    yield
    AcceleratorState._reset_state(True)  # the next test file's stages start with the default state


def test_teacher_training_on_the_gpu_follows_the_cpu_run(tmp_path):
    images, labels = torch.rand(32, 1, 8, 8) * 2 - 1, torch.randint(0, 3, (32,))
    params = TeacherTrainParams(**TINY_KDIFFUSION, steps=4, batch_size=4, warmup_steps=2, checkpoint_every=100)
    on_cpu = train_teacher(tiny_kdiffusion(), images, labels, params, tmp_path / "cpu.pt")
    on_gpu = train_teacher(tiny_kdiffusion().cuda(), images, labels, params, tmp_path / "gpu.pt")
    assert next(on_gpu.parameters()).is_cuda
    for (name, cpu), gpu in zip(on_cpu.state_dict().items(), on_gpu.state_dict().values()):
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-3), name  # same batches, noise and sigmas from the CPU RNG


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_stages_run_on_the_gpu(tmp_path, precision):
    write_tiny_project(tmp_path, tiny_kdiffusion(), pipeline_params(f"  mixed_precision: {precision}\n"))
    run_stages(tmp_path, ["features", "teacher", "pairs", "distill", "evaluate"])

    teacher, _ = read_teacher(tmp_path / "teacher")
    pairs = PairReader(tmp_path / "pairs", pair_metadata(teacher, PairsParams(count=6, shard_size=3, steps=2)))
    noise, target, labels = pairs.batch(torch.arange(6))
    on_cpu = heun_sample(teacher, noise, 2, labels)
    assert torch.allclose(target, on_cpu, atol=1e-3)  # the pairs were sampled on the GPU

    generator = load_generator(tmp_path / "generator")
    assert torch.isfinite(generator(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))).all()
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["device"] == torch.cuda.get_device_name()
    assert metrics["dmd_one_step"]["peak_memory_mib"] > 0  # CUDA's allocator counted it
