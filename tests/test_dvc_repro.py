"""`dvc repro` itself, on a copy of the project with tiny params: a teacher replaced at its path re-runs every stage
from `teacher` on, `distill.processes: 2` runs DDP under `dvc repro` (recorded, `dvc metrics diff` sees it), a
stage whose params are rejected leaves every output of the last good run as it was, cached
(models/generator) and uncached (reports/distill) alike, a data-free objective's distill does not hang on pairs, and
images added to `prepare.image_folder` re-run `prepare`."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import tiny_kdiffusion

pytestmark = pytest.mark.slow  # end to end: the fast tier (`-m 'not slow'`) leaves these out

TINY_PARAMS = """\
prepare: {source: mnist, resolution: 8, channels: 1, heldout_fraction: 0.2, seed: 0}
features: {steps: 5, batch_size: 16, lr: 2.0e-3, seed: 0}
teacher:
  kind: kdiffusion
  path: teacher.safetensors
  train: {sample_steps: 2}
pairs: {count: 4, shard_size: 2, batch_size: 2, sampler: heun, steps: 2, guidance: 1.0, dtype: float32}
distill: {steps: 2, objective: dmd, lambda_reg: 0.5, batch_size: 2, reg_batch_size: 2, sample_every: 1,
  checkpoint_every: 1}
evaluate: {samples: 8, sample_sets: 1, speed_batch_size: 4, speed_repeats: 1}
"""


def _digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def save_teacher(path, seed: int) -> None:
    from dmdlib.teachers.loading import save_kdiffusion

    teacher = tiny_kdiffusion(seed, classes=10, mapping_width=8)
    save_kdiffusion(path, teacher, teacher.config)


def dvc_project(repo_root, project, params: str):
    """A copy of the project's code and dvc.yaml in `project` with `params`, as a `dvc(*args)` runner."""
    for name in ("dmdlib", "dmd"):
        shutil.copytree(repo_root / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo_root / "dvc.yaml", project / "dvc.yaml")
    (project / "params.yaml").write_text(params)
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }

    def dvc(*args):
        return subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True
        )

    for command in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *command], cwd=project, check=True)
    assert dvc("init", "-q").returncode == 0
    git_commit(project)  # dvclive in a git repository wants a HEAD
    return dvc


def git_commit(project) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", "run"], cwd=project, check=True)


def test_a_replaced_teacher_and_a_rejected_param_under_dvc_repro(repo_root, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    save_teacher(project / "teacher.safetensors", seed=0)
    dvc = dvc_project(repo_root, project, TINY_PARAMS)
    first = dvc("repro")
    if first.returncode != 0:
        pytest.fail(first.stdout[-3000:] + first.stderr[-3000:])

    save_teacher(project / "teacher.safetensors", seed=1)  # another teacher at the same path
    replaced = dvc("repro")
    assert replaced.returncode == 0, replaced.stdout[-3000:] + replaced.stderr[-3000:]
    for stage in ("teacher", "pairs", "distill", "evaluate"):
        assert f"Running stage '{stage}'" in replaced.stdout, replaced.stdout
    again = dvc("repro")
    assert "Running stage 'teacher'" not in again.stdout and "Stage 'teacher' didn't change" in again.stdout

    git_commit(project)  # distill.processes: 2 makes `dvc repro` itself run DDP on two gloo processes
    (project / "params.yaml").write_text(
        TINY_PARAMS.replace("distill: {steps: 2,", "distill: {steps: 2, processes: 2,")
    )
    parallel = dvc("repro")
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-3000:]
    assert "launching 2 processes" in parallel.stderr and "Running stage 'distill'" in parallel.stdout
    assert "Running stage 'pairs'" not in parallel.stdout
    assert "processes: 2" in (project / "dvc.lock").read_text()
    diff = dvc("metrics", "diff", "--all")
    assert diff.returncode == 0 and "metrics/eval.json" in diff.stdout, diff.stdout + diff.stderr

    # Curves belong to their run: an experiment's are its own, a return to main brings back main's, and `plots diff`
    # loads the pictures of both.
    git_commit(project)
    curve = project / "dvclive" / "distill" / "plots" / "metrics" / "loss_fake.tsv"
    main_curve = curve.read_text()
    experiment = dvc("exp", "run", "-n", "longer", "-S", "distill.steps=3")
    assert experiment.returncode == 0, experiment.stdout[-3000:] + experiment.stderr[-3000:]
    assert curve.read_text() != main_curve and "\n3\t" in curve.read_text()
    subprocess.run(["git", "checkout", "--", "."], cwd=project, check=True)
    assert dvc("checkout").returncode == 0 and curve.read_text() == main_curve
    plots = dvc("plots", "diff", "HEAD", "longer", "--json")
    assert plots.returncode == 0, plots.stdout + plots.stderr
    pictures = json.loads(plots.stdout)["data"]["reports/distill/curves.png"]
    assert {revision for picture in pictures for revision in picture["revisions"]} == {"HEAD", "longer"}
    assert all(Path(picture["url"]).stat().st_size > 0 for picture in pictures)

    before = {name: _digest(project / name) for name in ("models/generator", "reports/distill", "reports/eval")}

    (project / "params.yaml").write_text(
        TINY_PARAMS.replace("distill: {steps: 2,", "distill: {steps: -1, processes: 2,")
    )
    rejected = dvc("repro")
    assert rejected.returncode != 0 and "distill.steps" in rejected.stdout + rejected.stderr
    after = {name: _digest(project / name) for name in before}
    assert after == before  # the cached generator and the uncached grids, untouched


def test_a_data_free_objective_neither_makes_nor_waits_on_pairs(repo_root, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    save_teacher(project / "teacher.safetensors", seed=0)
    data_free = TINY_PARAMS.replace("objective: dmd", "objective: sid")
    dvc = dvc_project(repo_root, project, data_free)
    first = dvc("repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "reads no pairs: none made" in first.stderr
    assert not list((project / "data/pairs").glob("shard-*"))
    generator = _digest(project / "models/generator")

    (project / "params.yaml").write_text(data_free.replace("steps: 2, guidance", "steps: 3, guidance"))
    changed = dvc("repro")  # another pairs sampler: the pairs stage runs (and makes nothing), distill does not
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "Running stage 'pairs'" in changed.stdout and "Running stage 'distill'" not in changed.stdout
    assert _digest(project / "models/generator") == generator


def test_images_added_to_the_image_folder_rerun_prepare(repo_root, tmp_path):
    """#40: `dvc status` called the pipeline up to date and `dvc repro` skipped `prepare` after images were added."""
    import numpy as np
    from PIL import Image

    project, images = tmp_path / "project", tmp_path / "images"
    project.mkdir()
    rng = np.random.default_rng(0)

    def add_image(name: str) -> None:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / name)

    for i in range(10):
        add_image(f"{'ab'[i % 2]}/{i}.png")
    params = f"prepare: {{source: image_folder, image_folder: {images}, resolution: 8, channels: 1}}\n"
    dvc = dvc_project(repo_root, project, params)
    first = dvc("repro", "prepare")
    assert first.returncode == 0 and "Running stage 'prepare'" in first.stdout, first.stdout + first.stderr
    again = dvc("repro", "prepare")
    assert "Running stage 'prepare'" not in again.stdout
    add_image("b/new.webp")
    assert dvc("repro", "sources").returncode == 0
    status = dvc("status", "prepare")
    assert "changed deps" in status.stdout and "data/sources/images.json" in status.stdout, status.stdout
    added = dvc("repro", "prepare")
    assert "Running stage 'prepare'" in added.stdout and "11 images" in added.stderr, added.stdout + added.stderr
