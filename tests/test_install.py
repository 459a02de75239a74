"""The core install: `pip install dmd` (no extras) is enough to load, sample and export a generator and to import
teachers; the pipeline's, evaluation's and k-diffusion's packages come only with their extras."""

import re
import subprocess
import sys
import tomllib

EXTRAS_ONLY = {"dvc", "dvclive", "lpips", "mlxtend", "clean-fid", "k-diffusion", "matplotlib", "accelerate", "scipy"}
MODULES = {"dvc", "dvclive", "lpips", "mlxtend", "cleanfid", "k_diffusion", "matplotlib", "accelerate", "scipy"}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in requirements}


def test_core_requirements_leave_the_heavy_parts_to_extras(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    assert not core & EXTRAS_ONLY, core & EXTRAS_ONLY
    extras = set().union(*(requirement_names(r) for r in project["optional-dependencies"].values()))
    assert EXTRAS_ONLY <= extras  # each still installable, by its extra
    assert "numpy<2" not in "".join(project["dependencies"])


def test_the_library_a_generator_needs_imports_none_of_them():
    code = (
        "import sys; import dmdlib.generators.generator, dmdlib.generators.seeds, dmdlib.teachers.loading, "
        "dmdlib.export, dmdlib.denoisers.sampling; print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not MODULES & set(eval(loaded)), loaded
