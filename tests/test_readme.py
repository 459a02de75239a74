"""Every Python snippet in README.md runs, against tiny models in the layout it names, so the documentation
cannot drift from the code."""

import re
import shutil

import torch
from tiny_models import save_tiny_stable_diffusion

from dmdlib.generator import Generator, save_generator
from dmdlib.teachers import build_kdiffusion, kdiffusion_config, save_kdiffusion


def readme_snippets(repo_root) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.DOTALL)


def test_every_python_snippet_of_the_readme_runs(repo_root, tmp_path, monkeypatch):
    snippets = readme_snippets(repo_root)
    assert len(snippets) == 2
    torch.manual_seed(0)
    # models/generator: a class-conditional (10 classes) 2-step generator that also takes the guidance scale
    config = kdiffusion_config(1, 8, [8, 8], [1, 1], 16, 10, 0.5, 0.002, 80.0, label_dropout=0.1)
    teacher = build_kdiffusion(config)
    weights = tmp_path / "teacher.safetensors"
    save_kdiffusion(weights, teacher, config)
    generator = Generator.from_teacher(teacher, [80.0, 1.0], (1.0, 3.0))
    save_generator(tmp_path / "models" / "generator", generator, {"kind": "kdiffusion", "path": str(weights)})
    # ~/models/sd15 and models/sd/generator/unet: a tiny Stable Diffusion and a UNet of its kind
    home = tmp_path / "home"
    save_tiny_stable_diffusion(home / "models" / "sd15")
    shutil.copytree(home / "models" / "sd15" / "unet", tmp_path / "models" / "sd" / "generator" / "unet")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(snippets[0], "README.md (generator)", "exec"), namespace)
    assert namespace["images"].shape == (16, 1, 8, 8)
    assert namespace["images"].min() >= -1 and namespace["images"].max() <= 1
    namespace = {}
    exec(compile(snippets[1], "README.md (Stable Diffusion)", "exec"), namespace)
    assert namespace["image"].size == (8, 8)
