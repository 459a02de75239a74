"""Every Python snippet in README.md runs, against tiny models in the layout it names, so the documentation
cannot drift from the code."""

import re

import pytest
import torch
from diffusers import DiffusionPipeline
from tiny_models import save_tiny_dit, save_tiny_flux, save_tiny_sd3, save_tiny_sdxl
from typer.testing import CliRunner

from dmd.stages.export import app as export_app
from dmdlib.export import export_generator
from dmdlib.generators.generator import Generator, save_generator
from dmdlib.teachers.families import load_teacher
from dmdlib.teachers.loading import build_kdiffusion, kdiffusion_config, save_kdiffusion


def readme_snippets(repo_root) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("classes", [10, 3, 0])
def test_every_python_snippet_of_the_readme_runs(repo_root, tmp_path, monkeypatch, classes):
    snippets = readme_snippets(repo_root)
    assert len(snippets) == 1
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
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(snippets[0], "README.md (generator)", "exec"), namespace)
    assert namespace["images"].shape == (16, 1, 8, 8)
    assert namespace["images"].min() >= -1 and namespace["images"].max() <= 1


def _save_generator_of(folder, kind: str, out, **reference) -> None:
    reference = {"kind": kind, "path": str(folder), **reference}
    save_generator(out, Generator.from_teacher(load_teacher(reference)), reference)


def test_the_readmes_export_lines_run(repo_root, tmp_path, monkeypatch):
    """The README's `export` command and its `python -c` call, on a tiny SDXL and its one-step generator."""
    block = re.search(r"```bash\n(dmd export .*?)```", (repo_root / "README.md").read_text(), re.DOTALL)
    export_line, call_line = block.group(1).splitlines()[:2]
    _save_generator_of(save_tiny_sdxl(tmp_path / "sdxl"), "sdxl", tmp_path / "models" / "sdxl" / "generator")
    (tmp_path / "pipelines" / "sdxl").mkdir(parents=True)
    (tmp_path / "pipelines" / "sdxl" / "params.yaml").write_text("distill: {}\n")
    monkeypatch.chdir(tmp_path)
    arguments = export_line.split()[2:]
    assert export_line.startswith("dmd export") and "--out" in arguments
    result = CliRunner().invoke(export_app, arguments)
    assert result.exit_code == 0, result.output
    code = re.fullmatch(r"python -c '(.*)'", call_line).group(1)
    exec(compile(code, "README.md (export)", "exec"), {})  # runs the exported pipeline's one step


@pytest.mark.parametrize("family", ["SD3", "FLUX", "DiT"])
def test_the_cards_call_of_each_family_runs(tmp_path, family):
    """The call the model card (and `export`'s log) gives runs in the exported stock pipeline."""
    build, kind, reference = {
        "SD3": (save_tiny_sd3, "sd3", {}),
        "DiT": (lambda folder: save_tiny_dit(folder, num_classes=1000), "dit", {}),
        "FLUX": (save_tiny_flux, "flux", {"resolution": 16, "embedded_guidance": 3.5}),
    }[family]
    _save_generator_of(build(tmp_path / kind), kind, tmp_path / "generator", **reference)
    how = export_generator(tmp_path / "generator", tmp_path / "export", lambda how: how)
    assert "guidance_scale=3.5" in how if family == "FLUX" else "guidance_scale=1.0" in how
    loading, call = how.split("; ")
    namespace = {"DiffusionPipeline": DiffusionPipeline, "folder": str(tmp_path / "export")}
    exec(loading, namespace)
    size = ", height=16, width=16" if family == "FLUX" else ""
    image = eval(call.rstrip(")") + size + ")", namespace).images[0]
    assert image.size == ((16, 16) if family == "FLUX" else (8, 8))
