"""`dmd`: one command over every stage of the pipeline and the commands beside it (`dmd <name> --help`).

Each sub-command is a stage module's Typer app, imported only when that command runs, so `dmd --help` starts without
torch; the list below reads each module's docstring from its source.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import import_module
from pathlib import Path

import click

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


class LazyCommands(click.Group):
    """Sub-commands loaded on use: listing them reads docstrings, not modules."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        import typer

        command = typer.main.get_command(import_module(f"dmd.stages.{name}").app)
        command.name = name
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary(name)) for name in COMMANDS])


cli = LazyCommands(
    name="dmd",
    help="Distribution Matching Distillation of diffusion models into one-step generators, stage by stage.\n\n"
    "`dvc repro` runs the pipeline (dvc.yaml), calling these; run one by hand with `dmd <name> --params params.yaml`.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in COMMANDS:
        # The stage then sees sys.argv as under `python -m dmd.stages.<name>`: one that re-launches itself (distill
        # under torchrun) passes sys.argv[1:] on as its options.
        sys.argv = [sys.argv[0], *args[1:]]
    cli.main(args=args, prog_name="dmd")


if __name__ == "__main__":
    main()
