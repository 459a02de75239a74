"""Every Python snippet in README.md runs, against tiny models in the layout it names, so the documentation
cannot drift from the code."""

import re

import pytest
import torch
from tiny_models import save_tiny_dit, save_tiny_flux, save_tiny_sd3, save_tiny_sdxl

from dmdlib.teachers.loading import build_kdiffusion, kdiffusion_config, load_teacher, save_kdiffusion
from dmdlib.training.generator import Generator, save_generator


def readme_snippets(repo_root) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("classes", [10, 3, 0])
def test_every_python_snippet_of_the_readme_runs(repo_root, tmp_path, monkeypatch, classes):
    snippets = readme_snippets(repo_root)
    assert len(snippets) == 2
    torch.manual_seed(0)
    # models/generator: a 2-step generator with `classes` classes (0: unconditional); a conditional one also takes the
    # guidance scale
    config = kdiffusion_config(
        1, 8, [8, 8], [1, 1], 16, classes, 0.5, 0.002, 80.0, label_dropout=0.1 if classes else 0.0
    )
    teacher = build_kdiffusion(config)
    weights = tmp_path / "teacher.safetensors"
    save_kdiffusion(weights, teacher, config)
    generator = Generator.from_teacher(teacher, [80.0, 1.0], (1.0, 3.0) if classes else None)
    save_generator(tmp_path / "models" / "generator", generator, {"kind": "kdiffusion", "path": str(weights)})
    # ~/models/sdxl and models/sdxl/generator: a tiny SDXL and a one-step generator of it, as `distill` writes it
    home = tmp_path / "home"
    _save_generator_of(save_tiny_sdxl(home / "models" / "sdxl"), "sdxl", tmp_path / "models" / "sdxl" / "generator")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(snippets[0], "README.md (generator)", "exec"), namespace)
    assert namespace["images"].shape == (16, 1, 8, 8)
    assert namespace["images"].min() >= -1 and namespace["images"].max() <= 1
    namespace = {}
    exec(compile(snippets[1], "README.md (diffusers pipelines)", "exec"), namespace)
    assert namespace["image"].size == (8, 8)


def _save_generator_of(folder, kind: str, out, **reference) -> None:
    reference = {"kind": kind, "path": str(folder), **reference}
    save_generator(out, Generator.from_teacher(load_teacher(reference)), reference)


@pytest.mark.parametrize("family", ["SD3", "FLUX", "DiT"])
def test_the_readmes_one_step_call_of_each_family_runs(repo_root, tmp_path, family):
    """The commented calls under the pipeline snippet, with the snippet's own `one_step_pipeline`."""
    build, kind, reference = {
        "SD3": (save_tiny_sd3, "sd3", {}),
        "DiT": (lambda folder: save_tiny_dit(folder, num_classes=1000), "dit", {}),
        "FLUX": (save_tiny_flux, "flux", {"resolution": 16, "embedded_guidance": 3.5}),
    }[family]
    _save_generator_of(build(tmp_path / kind), kind, tmp_path / "generator", **reference)
    snippet = readme_snippets(repo_root)[1]
    call = re.search(rf"^# {family}: +(pipe\(.*?\))", snippet, flags=re.MULTILINE).group(1)
    namespace: dict = {}
    exec(compile(snippet.split("\n\npipe = ")[0], "README.md (diffusers pipelines)", "exec"), namespace)
    pipe = namespace["one_step_pipeline"](str(tmp_path / kind), str(tmp_path / "generator"))
    size = {"height": 16, "width": 16} if family == "FLUX" else {}
    image = eval(call.replace("prompt,", "'a cat',").rstrip(")") + ", **size)", {"pipe": pipe, "size": size}).images[0]
    assert image.size == ((16, 16) if family == "FLUX" else (8, 8))
