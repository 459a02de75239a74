"""Rewrite each stage's code deps in the DVC pipeline files as the files its module imports (scripts/import_graph.py).

Run after changing imports: `python scripts/sync_dvc_deps.py`; tests/test_structure.py checks the result.
Data deps (anything outside dmdlib/ and dmd/) are kept, in their order, before the code deps.
"""

import re
from pathlib import Path

from import_graph import PIPELINE_FILES, ROOT, compact, graph, stage_code, stage_module  # scripts/ is on sys.path


def sync(path: Path, edges) -> None:
    lines, out, stage_file, i = path.read_text().splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        stage_file = stage_module(line) or stage_file
        out.append(line)
        if line.strip() == "deps:" and stage_file:
            indent = re.match(r"\s*", lines[i + 1]).group(0)
            i += 1
            kept = []
            while i < len(lines) and lines[i].startswith(indent + "- "):
                dep = lines[i].strip()[2:]
                if not dep.startswith(("dmdlib", "dmd")):
                    kept.append(dep)
                i += 1
            out.extend(f"{indent}- {dep}" for dep in kept + compact(stage_code(stage_file, edges)))
            stage_file = None
            continue
        i += 1
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    edges = graph()
    for name in PIPELINE_FILES:
        sync(ROOT / name, edges)
