"""`teacher_source` stage: the digest of an imported teacher's files, a dependency of `teacher`.

DVC runs it every time (`always_changed`); its output changes only when the teacher's bytes do, so a teacher
replaced at the same path re-runs `teacher` and every stage after it. Files whose size, modification time and
inode are unchanged are not read again (their digests are kept in --cache).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from dmdlib.data.io import atomic_output, check_writable
from dmdlib.params import load_params
from dmdlib.teachers.loading import source_digest
from stages.common import PARAMS_OPTION, setup_logging, user_errors

log = logging.getLogger("teacher_source")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("models/teacher_source.json"), help="The teacher kind and its files' digest (JSON)."),
    cache: Path = typer.Option(
        Path("checkpoints/teacher_files.json"), help="Digests of files seen before, by size, time and inode."
    ),
) -> None:
    """Write the digest of teacher.path, teacher.config and teacher.vae (none for the trained default teacher)."""
    setup_logging()
    with user_errors():
        config = load_params(params, "teacher").teacher
        check_writable(out, cache)
        description = {"kind": config.kind, "source": source_digest(config.files(), cache) if config.files() else None}
        with atomic_output(out) as tmp:
            tmp.write_text(json.dumps(description, indent=2))
    log.info("teacher %s: %s", config.kind, description["source"] or "trained here, no files to read")


if __name__ == "__main__":
    app()
