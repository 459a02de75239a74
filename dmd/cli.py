"""`dmd`: one command over every stage of the pipeline and the commands beside it (`dmd <name> --help`).

Each command is a stage module's Typer app, imported only when that command runs, so `dmd --help` starts without
torch: the list reads each module's docstring from its source.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from importlib import import_module
from pathlib import Path

STAGES = Path(__file__).parent / "stages"
# Pipeline order, then the commands beside the pipeline.
COMMANDS = (
    "sources", "prepare", "features", "teacher", "prompts", "pairs", "distill", "evaluate",
    "sample", "export", "checkpoints",
)  # fmt: skip


def summary(name: str) -> str:
    """The first sentence of a stage module's docstring, without its "`name` stage:" lead."""
    docstring = ast.get_docstring(ast.parse((STAGES / f"{name}.py").read_text())) or ""
    text = re.sub(r"^`[a-z]+`( stage| command)?( \([^)]*\))?: ", "", " ".join(docstring.split()))
    return re.split(r"(?<=[.;:])\s", text, maxsplit=1)[0].rstrip(".;:")


USAGE = """Usage: dmd COMMAND [OPTIONS]

  Distribution Matching Distillation of diffusion models into one-step generators, stage by stage. `dvc repro` runs
  the pipeline (dvc.yaml), which calls these; run one by hand as `dmd COMMAND --params params.yaml`, and see
  `dmd COMMAND --help` for its options.

Commands:
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        textwrap.fill(
            summary(name),
            116,
            initial_indent=f"  {name.ljust(width)}  ",
            subsequent_indent=" " * (width + 4),
            break_on_hyphens=False,
        )
        for name in COMMANDS
    ]
    return USAGE + "\n".join(lines) + "\n"


def main() -> None:
    """Run `dmd COMMAND ...`: the stage module is imported only now (its Typer app parses the rest)."""
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    if args[0] not in COMMANDS:
        print(f"dmd: no command {args[0]!r}; expected one of {', '.join(COMMANDS)} (dmd --help)", file=sys.stderr)
        sys.exit(2)
    # The stage sees sys.argv as under `python -m dmd.stages.<name>`: one that re-launches itself (distill under
    # torchrun) passes sys.argv[1:] on as its options.
    sys.argv = [sys.argv[0], *args[1:]]
    import_module(f"dmd.stages.{args[0]}").app(args=args[1:], prog_name=f"dmd {args[0]}")


if __name__ == "__main__":
    main()
