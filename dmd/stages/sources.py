"""`sources` stage: digests of the files outside the project that params name, each a dependency of the stage that
reads them: an imported teacher's (`teacher`), `prepare.image_folder` (`prepare`), `prompts.file` (`prompts`), and
evaluate's reference images, Inception weights and statistics and CLIP model (`evaluate`).

DVC runs it every time (`always_changed`, which is why `dvc status` always lists it); an output changes only when
the bytes it describes do, so images added to the folder re-run `prepare`, a teacher replaced at the same path
re-runs `teacher`, and every stage after them. Files whose size, modification time and inode are unchanged are not
read again (their digests are kept in --cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import typer

from dmd.stages.common import PARAMS_OPTION, setup_logging, user_errors
from dmdlib.data.io import atomic_output, check_writable, files_digest
from dmdlib.errors import DataError
from dmdlib.params import Params, load_params
from dmdlib.teachers.loading import source_digest

log = logging.getLogger("sources")
app = typer.Typer(add_completion=False, help=__doc__)


def _option(reader: str) -> Path | None:
    return typer.Option(None, help=f"JSON of the digests that `{reader}` depends on; not written when omitted.")


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher_out: Path | None = _option("teacher"),
    images_out: Path | None = _option("prepare"),
    prompts_out: Path | None = _option("prompts"),
    evaluate_out: Path | None = _option("evaluate"),
    cache: Path = typer.Option(
        Path("checkpoints/source_files.json"), help="Digests of files seen before, by size, time and inode."
    ),
) -> None:
    """Write, for each output asked for, the digest of every file its stage reads from outside the project (null for
    a key that is not set)."""
    setup_logging()
    with user_errors():
        config = load_params(params)
        outs = {"teacher": teacher_out, "images": images_out, "prompts": prompts_out, "evaluate": evaluate_out}
        check_writable(cache, *[out for out in outs.values() if out is not None])
        for name, out in outs.items():
            if out is not None:
                description = _describe(name, config, cache)
                before = json.loads(out.read_text()) if out.is_file() else None
                with atomic_output(out) as tmp:
                    tmp.write_text(json.dumps(description, indent=2))
                changed = [key for key, value in description.items() if before is None or before.get(key) != value]
                log.info("%s: %s", out, f"{', '.join(changed)} changed since the last run" if changed else "as before")


def _describe(name: str, config: Params, cache: Path) -> dict:
    if name == "teacher":
        files = config.teacher.files()
        return {"kind": config.teacher.kind, "source": source_digest(files, cache) if files else None}
    prepare, evaluate = config.prepare, config.evaluate
    paths = {
        "images": {"prepare.image_folder": prepare.image_folder if prepare.source == "image_folder" else None},
        "prompts": {"prompts.file": config.prompts.file},
        "evaluate": {
            f"evaluate.{key}": getattr(evaluate, key)
            for key in ("reference_images", "inception_path", "inception_statistics", "clip_model")
        },
    }[name]
    return {key: _digest(key, path, cache) for key, path in paths.items()}


def _digest(key: str, path: str | None, cache: Path) -> str | None:
    """One SHA-256 of the files at `path` (a file or a folder), whatever its place on this machine; None if unset."""
    if path is None:
        return None
    try:
        files = files_digest(path, cache)
    except DataError as err:
        raise DataError(f"{key}: {err}; give the local path of the file or folder") from None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    app()
