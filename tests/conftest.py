"""Shared fixtures: the repository root, each test in a folder of its own, and few threads so tests behave on 2-core
machines."""

import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("DMD_TEST_THREADS", 2)))  # 1 beside another torch job: no thread thrashing
sys.path.append(str(Path(__file__).resolve().parent.parent / "scripts"))  # import_graph, shared with sync_dvc_deps.py


@pytest.fixture(autouse=True)
def _in_own_folder(tmp_path, monkeypatch) -> None:
    """Each test runs in its own temporary folder: a stage's default output paths (dvclive/, reports/) never land
    in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def nvlabs_fixtures(repo_root) -> Path:
    """NVlabs-made EDM/EDM2 snapshots and reference outputs (../shared/fixtures, or $DMD_FIXTURES); skip without
    them."""
    import os

    folder = Path(os.environ.get("DMD_FIXTURES", repo_root.parent / "shared" / "fixtures"))
    if not (folder / "edm").is_dir():
        pytest.skip(f"{folder}: no NVlabs EDM/EDM2 fixtures here (set DMD_FIXTURES to their folder)")
    return folder
