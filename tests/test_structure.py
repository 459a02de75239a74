"""The codebase's shape: no import cycles, imports at module top, stages that are only CLIs and independent of each
other, a library that knows no CLI, DVC deps complete, and the loop and step functions small enough to read against
Algorithm 1."""

import ast
from pathlib import Path

import pytest
import yaml
from import_graph import PIPELINE_FILES, ROOT, cycles, graph, imports_of, project_files, stage_code, stage_module

# Libraries that cost seconds to import and that only some paths need: imported where used.
HEAVY_OPTIONAL = (
    "accelerate",
    "bitsandbytes",
    "cleanfid",
    "k_diffusion",
    "diffusers",
    "dvclive",
    "lpips",
    "matplotlib",
    "mlxtend",
    "peft",
    "scipy",
    "torch.distributed",
    "torch.profiler",
    "torchvision",
    "transformers",
)
PIPELINES = {name: ROOT / name for name in PIPELINE_FILES}


def stage_modules(pipeline: Path) -> dict[str, str]:
    """stage name -> the stage module its `dmd <name>` command runs."""
    stages = yaml.safe_load(pipeline.read_text())["stages"]
    return {name: stage_module(spec["cmd"]) for name, spec in stages.items()}


def test_no_import_cycles_counting_imports_inside_functions():
    assert cycles(graph(own_packages=False)) == []


def test_imports_at_top():
    """Project modules are imported at module top and only heavy libraries inside functions."""
    inner = [
        f"{i.source}:{i.line} imports {i.target}"
        for path in project_files()
        for i in imports_of(path)
        if not i.top_level
    ]
    assert inner == []
    for path in (ROOT / "dmdlib").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    heavy = any(name == lib or name.startswith(f"{lib}.") for lib in HEAVY_OPTIONAL)
                    assert heavy, f"{path.relative_to(ROOT)}:{node.lineno} imports {name} inside a function"


# dmdlib's parts, lowest floor first: a part imports from the floors below it, never from its own floor or above
# (training and evaluation share the generator and its seeded inputs through `generators`, not each other).
FLOORS = (
    {"errors", "provenance"},
    {"params", "networks"},
    {"data"},
    {"denoisers"},
    {"teachers"},
    {"generators"},
    {"training", "evaluation"},
    {"export"},
)


def test_library_floors():
    floor = {part: level for level, parts in enumerate(FLOORS) for part in parts}
    part = lambda path: path.split("/")[1].removesuffix(".py")  # noqa: E731
    assert {part(str(p.relative_to(ROOT))) for p in (ROOT / "dmdlib").iterdir() if p.name != "__pycache__"} == {
        *floor,
        "__init__",
    }, "a new part of dmdlib: give it a floor in FLOORS"
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph(own_packages=False).items()
        if source.startswith("dmdlib/") and source != "dmdlib/__init__.py"
        for target in targets
        if target.startswith("dmdlib/") and target != "dmdlib/__init__.py"
        and part(source) != part(target) and floor[part(target)] >= floor[part(source)]
    ]  # fmt: skip
    assert wrong == []


def test_stages_never_import_each_other():
    stage_files = {file for pipeline in PIPELINES.values() for file in stage_modules(pipeline).values()}
    edges = graph()
    for stage in stage_files:
        assert not edges[stage] & (stage_files - {stage}), f"{stage} imports another stage"


def test_stages_are_only_clis():
    """dmd/stages/ is one Typer executable per pipeline stage (`app`, `main`), the commands beside the pipeline
    (`sample`, `export`, `checkpoints`) and common.py, their shared CLI kit; the library, tests, benchmarks and scripts
    import from a stage module at most its `app`, and never its helpers."""
    pipeline_stages = {file for pipeline in PIPELINES.values() for file in stage_modules(pipeline).values()}
    pipeline_stages |= {"dmd/stages/sample.py", "dmd/stages/export.py", "dmd/stages/checkpoints.py"}
    for path in sorted((ROOT / "dmd" / "stages").glob("*.py")):
        name = str(path.relative_to(ROOT))
        if path.name in ("__init__.py", "common.py"):
            continue
        tree = ast.parse(path.read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        defined |= {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        assert name in pipeline_stages and {"app", "main"} <= defined, f"{name} is not a pipeline stage's CLI"
    for folder in ("dmdlib", "tests", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dmd.stages."):
                    names = {alias.name for alias in node.names}
                    allowed = folder != "dmdlib" and (
                        names == {"app"} or node.module == "dmd.stages.common" and folder == "tests"
                    )
                    assert allowed, f"{path.relative_to(ROOT)}:{node.lineno} imports {names} from {node.module}"


def test_library_knows_no_cli():
    """The library knows no cli or dvc and scripts use nothing of the tests."""
    for path in (ROOT / "dmdlib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("typer", "dvc", "dvclive", "dmd") for n in names), (
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {names}"
                )
    for path in [*(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        text = path.read_text()
        assert "tests" not in {n.split(".")[0] for n in _imported(text)} and '/ "tests"' not in text, path.name


def _imported(text: str) -> list[str]:
    return [
        alias.name for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import) for alias in node.names
    ] + [node.module for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ImportFrom) and node.module]


def test_every_pipeline_ends_with_the_evaluate_stage():
    """A template that stops at distill would leave its users without metrics (the SD one did)."""
    for pipeline, path in PIPELINES.items():
        stages = yaml.safe_load(path.read_text())["stages"]
        assert list(stages)[-1] == "evaluate" and {"teacher", "pairs", "distill"} <= set(stages), pipeline


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_dvc_code_deps_are_the_files_each_stage_imports(pipeline):
    """Editing a file a stage runs makes `dvc status` report that stage as changed, and editing any other file does
    not (#40: whole sub-packages as deps re-ran stages that never import the file edited)."""
    stages = yaml.safe_load(PIPELINES[pipeline].read_text())["stages"]
    edges = graph()
    for name, module in stage_modules(PIPELINES[pipeline]).items():
        code_deps = {str(dep) for dep in stages[name].get("deps", []) if str(dep).startswith(("dmdlib", "dmd"))}
        imported = stage_code(module, edges)
        assert code_deps == imported, (
            f"{pipeline}: stage {name!r} misses {sorted(imported - code_deps)} and needlessly depends on "
            f"{sorted(code_deps - imported)}; run scripts/sync_dvc_deps.py"
        )


def function(path: str, name: str) -> ast.FunctionDef:
    tree = ast.parse((ROOT / path).read_text())
    return next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name)


def test_stage_mains_distill_and_step_functions_stay_small():
    for path in sorted(set(stage_modules(PIPELINES["dvc.yaml"]).values()) | {"dmd/stages/prompts.py"}):
        main = function(path, "main")  # its body: the signature lists one option a line
        assert main.end_lineno - main.body[0].lineno + 1 <= 50, (
            f"{path}: main() has {main.end_lineno - main.lineno + 1} lines"
        )
    loop = function("dmdlib/training/distill.py", "distill")
    assert loop.end_lineno - loop.body[0].lineno + 1 <= 60
    for name in ("generator_step", "fake_denoiser_step"):
        arguments = function("dmdlib/training/dmd.py", name).args
        assert len(arguments.args) + len(arguments.kwonlyargs) <= 6, name
        assert arguments.kwonlyargs, f"{name}: its options are keyword-only"
