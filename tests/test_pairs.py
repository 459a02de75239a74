"""The `pairs` stage: per-seed determinism, resumption, validation, several processes, diffusers schedulers."""

import os
import subprocess
import sys
from collections import namedtuple

import pytest
import torch
from tiny_models import save_tiny_ddpm, tiny_kdiffusion
from tiny_project import Killed
from typer.testing import CliRunner

from dmd.stages.pairs import app
from dmd.stages.teacher import app as teacher_app
from dmdlib.denoisers.sampling import heun_sample, make_scheduler, scheduler_sample
from dmdlib.errors import PairsError
from dmdlib.generators.seeds import make_sampler, seeded_inputs
from dmdlib.teachers.diffusers import load_diffusers_ddpm
from dmdlib.teachers.loading import save_kdiffusion
from dmdlib.teachers.reference import read_teacher
from dmdlib.training.pairs import PairReader, ShardPlan, generate_pairs, pair_metadata

PARAMS = "pairs:\n  count: 10\n  shard_size: 4\n  batch_size: {batch}\n  steps: 3\ndistill: {{}}\n"


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    teacher = tiny_kdiffusion()
    save_kdiffusion(root / "k.safetensors", teacher, teacher.config)
    params = root / "params.yaml"
    params.write_text(
        f"teacher:\n  kind: kdiffusion\n  path: {root / 'k.safetensors'}\n  train:\n    sample_steps: 2\n"
    )
    outputs = {"--out": "teacher", "--samples": "s.png", "--live": "live", "--curves": "curves.png"}
    arguments = [str(part) for option, name in outputs.items() for part in (option, root / name)]
    result = CliRunner().invoke(teacher_app, ["--params", str(params), *arguments])
    assert result.exit_code == 0, result.output
    return root / "teacher"


def make_pairs(tmp_path, teacher_folder, name, batch=4, extra_env=None):
    params = tmp_path / f"{name}.yaml"
    params.write_text(PARAMS.format(batch=batch))
    out = tmp_path / name
    result = CliRunner().invoke(app, ["--params", str(params), "--teacher", str(teacher_folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


Loaded = namedtuple("Loaded", "noise target labels")  # every pair of a folder


def load(folder, teacher_folder, batch=4):
    from dmdlib.params import PairsParams

    teacher, _ = read_teacher(teacher_folder)
    params = PairsParams(count=10, shard_size=4, batch_size=batch, steps=3)
    return Loaded(*PairReader(folder, pair_metadata(teacher, params)).batch(torch.arange(10)))


def test_seeded_inputs_depend_only_on_the_seed():
    a, label_a = seeded_inputs(7, (1, 4, 4), 10)
    b, label_b = seeded_inputs(7, (1, 4, 4), 10)
    c, _ = seeded_inputs(8, (1, 4, 4), 10)
    assert torch.equal(a, b) and label_a == label_b and not torch.equal(a, c)
    assert ShardPlan(10, 4, 100).seeds(2) == range(108, 110) and ShardPlan(10, 4).shards == 3


def test_batch_size_changes_only_the_last_bits(tmp_path, teacher_folder):
    one = load(make_pairs(tmp_path, teacher_folder, "b1", batch=1), teacher_folder)
    eight = load(make_pairs(tmp_path, teacher_folder, "b8", batch=8), teacher_folder)
    again = load(make_pairs(tmp_path, teacher_folder, "b8again", batch=8), teacher_folder)
    assert torch.equal(one.noise, eight.noise) and torch.equal(one.labels, eight.labels)
    assert torch.allclose(one.target, eight.target, atol=1e-5)  # float kernels differ across batch shapes
    assert torch.equal(eight.target, again.target)  # the same settings repeat bit for bit
    assert len(one.noise) == 10 and set(one.labels.tolist()) <= {0, 1, 2}


def test_killed_run_resumes_to_the_same_set(tmp_path, teacher_folder):
    teacher, _ = read_teacher(teacher_folder)
    plan, meta = (
        ShardPlan(10, 4),
        {"teacher": "t", "sampler": "heun", "steps": 3, "guidance": 1.0, "shape": [1, 8, 8], "dtype": "float32"},
    )
    sample = lambda noise, labels: heun_sample(teacher, noise, 3, labels)

    made = []

    def kill_in_second_shard(count):
        made.append(count)
        if sum(made) > 6:
            raise Killed

    with pytest.raises(Killed):
        generate_pairs(tmp_path / "killed", plan, meta, sample, (1, 8, 8), 3, 2, progress=kill_in_second_shard)
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["shard-00000.parquet"]  # no half shard
    resumed = generate_pairs(tmp_path / "killed", plan, meta, sample, (1, 8, 8), 3, 2)
    assert resumed == [1, 2]  # the complete first shard was kept
    generate_pairs(tmp_path / "whole", plan, meta, sample, (1, 8, 8), 3, 2)
    a, b = (PairReader(tmp_path / folder, meta).batch(torch.arange(10)) for folder in ("killed", "whole"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_corrupt_and_foreign_shards_are_named(tmp_path, teacher_folder):
    folder = make_pairs(tmp_path, teacher_folder, "good")
    load(folder, teacher_folder)
    corrupt = folder / "shard-00001.parquet"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(PairsError, match="shard-00001.parquet: corrupt"):
        load(folder, teacher_folder)
    other = make_pairs(tmp_path, teacher_folder, "other")
    teacher, _ = read_teacher(teacher_folder)
    from dmdlib.params import PairsParams

    expected = pair_metadata(teacher, PairsParams(count=10, shard_size=4, batch_size=4, steps=3))
    with pytest.raises(PairsError, match="shard-00000.parquet: teacher is '[0-9a-f]+', expected 'another'"):
        PairReader(other, {**expected, "teacher": "another"})
    with pytest.raises(PairsError, match="shape is \\[1, 8, 8\\], expected \\[1, 16, 16\\]"):
        PairReader(other, {**expected, "shape": [1, 16, 16]})
    # Re-running the stage re-makes only the corrupt shard.
    make_pairs(tmp_path, teacher_folder, "good")
    load(folder, teacher_folder)


def test_changed_shard_bytes(tmp_path, teacher_folder, caplog):
    """Same size, different bytes in the middle of the data: the page checksums catch it, the stage names the
    shard and re-makes it, and the re-made pairs equal the original ones."""
    import logging

    folder = make_pairs(tmp_path, teacher_folder, "good")
    original = load(folder, teacher_folder)
    shard = folder / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    shard.write_bytes(bytes(data))
    with pytest.raises(PairsError, match="shard-00000.parquet: corrupt or not Parquet.*(CRC|checksum|Couldn't)"):
        load(folder, teacher_folder)
    with caplog.at_level(logging.WARNING):
        make_pairs(tmp_path, teacher_folder, "good")
    assert "re-making" in caplog.text and "shard-00000.parquet" in caplog.text
    remade = load(folder, teacher_folder)
    assert torch.equal(remade.target, original.target) and torch.equal(remade.noise, original.noise)


def test_changed_bytes_in_the_prepared_data_are_named(tmp_path):
    from dmdlib.data.prepared import ImageSet, read_image_parquet, split_train_heldout, write_image_parquet
    from dmdlib.errors import DataError

    images = torch.randint(0, 256, (40, 8, 8, 1), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    path = tmp_path / "prepared.parquet"
    write_image_parquet(
        path, ImageSet(images, (torch.arange(40) % 2).numpy(), split_train_heldout(40, 0.25, 0), ["a", "b"])
    )
    data = bytearray(path.read_bytes())
    data[len(data) // 4] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match="prepared.parquet: corrupt or not Parquet.*delete it and re-run the `prepare` stage"
    ):
        read_image_parquet(path)


@pytest.mark.slow
def test_two_processes_split_the_seeds_without_gaps(tmp_path, teacher_folder, repo_root):
    single = make_pairs(tmp_path, teacher_folder, "single")
    params = tmp_path / "two.yaml"
    params.write_text(PARAMS.format(batch=4))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "dmd.stages.pairs",
        "--params",
        str(params),
        "--teacher",
        str(teacher_folder),
        "--out",
        str(tmp_path / "two"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # each process makes its own shards (on the CPU under torchrun both used to make all of them, as process 1/1)
    assert "process 1/2 wrote 2 shards" in result.stderr and "process 2/2 wrote 1 shards" in result.stderr
    a, b = load(single, teacher_folder), load(tmp_path / "two", teacher_folder)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.labels, b.labels)
    assert torch.allclose(a.target, b.target, atol=1e-5)  # other thread counts may change the last bits


def test_scheduler_sampling(tmp_path):
    """Diffusers scheduler sampling matches the diffusers pipeline."""
    from diffusers import DDIMPipeline

    folder = save_tiny_ddpm(tmp_path / "ddpm")
    teacher = load_diffusers_ddpm(folder)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = make_scheduler("DDIMScheduler", teacher.scheduler_config)
    ours = scheduler_sample(teacher, noise, scheduler, steps=5)
    pipeline = DDIMPipeline(unet=teacher.network, scheduler=make_scheduler("DDIMScheduler", teacher.scheduler_config))
    pipeline.set_progress_bar_config(disable=True)
    reference = pipeline(
        batch_size=2, num_inference_steps=5, eta=0.0, output_type="np", generator=torch.Generator().manual_seed(0)
    )
    # The pipeline draws the same noise from the same seed, then clamps and maps to [0, 1].
    expected = torch.from_numpy(reference.images).permute(0, 3, 1, 2)
    assert torch.allclose((ours.clamp(-1, 1) + 1) / 2, expected, atol=1e-4)
    with pytest.raises(ValueError, match="expected 'heun' or a diffusers scheduler"):
        make_scheduler("NoSuchThing", teacher.scheduler_config)


def test_sampler_passes_the_condition(teacher_folder):
    from dmdlib.denoisers.conditions import Conditions
    from dmdlib.params import PairsParams

    teacher, _ = read_teacher(teacher_folder)
    with torch.no_grad():  # k-diffusion zero-initialises the class embedding; make the label matter
        for parameter in teacher.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    params = PairsParams(steps=2)
    z, ids = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    conditional = make_sampler(teacher, params, Conditions.of(teacher))(z, ids)
    assert torch.equal(conditional, heun_sample(teacher, z, 2, ids))
    assert not torch.allclose(conditional, make_sampler(teacher, params)(z, ids))
