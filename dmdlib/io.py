"""Atomic outputs: a path appears complete or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for a file or a directory written at the yielded path. On error the temporary is
    removed and whatever was at `path` before is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary output {tmp} for {final}")  # a bug, not a user error
        if tmp.is_dir() and final.exists():
            # os.replace cannot swap a directory onto an existing one; move the old one aside first.
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def resumable_step(checkpoint: str | os.PathLike, fingerprint: str) -> int:
    """The step a training run would resume from: its checkpoint's if present and made with `fingerprint`, else 0."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return 0
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["step"]) if state.get("fingerprint") == fingerprint else 0


def read_tagged_parquet(path: str | os.PathLike, metadata_key: bytes, columns: tuple[str, ...],
                        error: type[Exception], stage: str):
    """A Parquet file one of the stages wrote: (table, its JSON metadata), or `error` naming the file and the fault."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise error(f"{path}: not found; run the `{stage}` stage first (`dvc repro {stage}`)") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise error(f"{path}: corrupt or not Parquet ({err}); delete it and re-run the `{stage}` stage") from None
    raw = (table.schema.metadata or {}).get(metadata_key)
    if raw is None:
        raise error(f"{path}: no '{metadata_key.decode()}' metadata; expected a file written by the `{stage}` stage")
    missing = set(columns) - set(table.column_names)
    if missing:
        raise error(f"{path}: missing columns {sorted(missing)}")
    return table, json.loads(raw)
