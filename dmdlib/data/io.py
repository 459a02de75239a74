"""Atomic outputs (a path appears complete or not at all), checked Parquet and checkpoint reads, and rows read by row
group."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import socket
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dmdlib.errors import DataError, OutputError

log = logging.getLogger(__name__)
# In every folder a stage writes: the mark that the folder is this project's output, which a stage may replace whole.
OUTPUT_MARK = ".dmd-output"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for a file or a directory written at the yielded path. On error the temporary is
    removed and whatever was at `path` before is left untouched; a write that fails for want of
    space, size or permission is an OutputError naming `path`.
    """
    final = Path(path)
    check_writable(final)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        try:
            yield tmp
            if not tmp.exists():
                raise RuntimeError(
                    f"nothing was written to the temporary output {tmp} for {final}"
                )  # a bug, not a user error
            if tmp.is_dir():
                (tmp / OUTPUT_MARK).touch()
            _umask_modes(tmp)
            check_writable(final)  # a folder may have appeared at `final` while the work ran
            if tmp.is_dir() and final.exists():
                # os.replace cannot swap a directory onto an existing one; move the old one aside first.
                old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(final, old)
                os.replace(tmp, final)
                _remove(old)
            else:
                os.replace(tmp, final)
        except Exception as err:  # pyarrow, safetensors and PIL raise their own types; `_write_failure` tells
            reason = _write_failure(err, tmp)
            if reason is None:
                raise
            raise OutputError(f"{final}: could not be written ({reason}); what was there before is untouched") from None
    finally:
        _remove(tmp)


# Errors that only a write gives; permission errors count when they name the output being written.
WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


def _write_failure(err: Exception, tmp: Path) -> str | None:
    """Why writing `tmp` failed, if `err` says it did for want of space, size or permission; None for anything else.
    pyarrow's and safetensors' writers say it in their message only, without an errno."""
    code = getattr(err, "errno", None)
    if code in WRITE_ERRNOS or (code in (errno.EACCES, errno.EPERM) and str(tmp) in str(getattr(err, "filename", ""))):
        return os.strerror(code)
    return next((os.strerror(code) for code in WRITE_ERRNOS if os.strerror(code) in str(err)), None)


def check_writable(*paths: str | os.PathLike) -> None:
    """Stop before any work when an output could not be written: the folder each is written in (and an output folder
    that exists) is created if missing and must take a new file, and a folder already at the path must be empty or
    this project's (`OUTPUT_MARK`), since a stage replaces its output whole; an OutputError names the path and why."""
    for path in map(Path, paths):
        _refuse_foreign_folder(path)
        for folder in [path.parent, *([path] if path.is_dir() else [])]:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as err:
                reason = "a file, not a folder" if isinstance(err, FileExistsError) else err.strerror or err
                raise OutputError(
                    f"{path}: cannot be written in {folder} ({reason}); make the folder writable or give another path"
                ) from None


def claim_folder(path: str | os.PathLike, clear: bool = False) -> Path:
    """Make `path` a folder of this project's outputs (created if missing, marked), emptied first if `clear`; a folder
    that holds anything not written here is refused, not emptied."""
    path = Path(path)
    check_writable(path)
    if clear:
        _remove(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / OUTPUT_MARK).touch()
    return path


def _refuse_foreign_folder(path: Path) -> None:
    if path.is_dir() and not (path / OUTPUT_MARK).exists() and any(path.iterdir()):
        entries = sorted(entry.name for entry in path.iterdir())
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise OutputError(
            f"{path}: a folder this project did not write (it holds {shown}, and no {OUTPUT_MARK} mark); a stage "
            "replaces its output folder whole, so give a path that does not exist yet (or delete the folder yourself "
            "if nothing in it is needed, an earlier version's output included)"
        )


@contextlib.contextmanager
def single_writer(path: str | os.PathLike, rank: int = 0) -> Iterator[None]:
    """An exclusive lock on `path` (a checkpoint, an output folder) while this run writes it, one per process
    rank: a second run on the same path stops at once, naming the process that holds it."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock" + (f"-rank{rank}" if rank else ""))
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataError(
            f"{path}: in use by {holder}, another run writing it; wait for it to end (or stop it) and run again"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _umask_modes(path: Path) -> None:
    """The modes a plain open() would give (files 0666, folders 0777, less the umask): some writers, safetensors
    among them, create 0600 temporaries, which would make one output unreadable to the group when others are not."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def load_tensors(path: str | os.PathLike, error: type[Exception], instead: str):
    """torch.load(weights_only=True), with one line naming the file (and the refused global) when it is not a
    weights-only file: a pickle that would run code, or garbage. `instead` says what to do about it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        reason = (
            f"it refers to {refused.group(1)}, which a weights-only load refuses (nothing was run)"
            if refused
            else "not a file of tensors that torch.save writes"
        )
        raise error(f"{path}: not a weights-only checkpoint: {reason}; {instead}") from None


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(16 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under `folder`, symlinked files and sub-folders followed (each real folder once, so a link to an
    ancestor does not loop); hidden files and folders (names starting with a dot) left out."""
    files, seen = [], set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        files += [Path(root, name) for name in names if not name.startswith(".")]
    return sorted(path for path in files if path.is_file())


def files_digest(root: str | os.PathLike, cache: str | os.PathLike | None = None) -> dict[str, str]:
    """SHA-256 of every file under `root` (or of `root` itself, a file), by path relative to it. With `cache` (a JSON
    file), a file whose size, modification time and inode are unchanged is not read again, as DVC does."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: not found")
    files = [root] if root.is_file() else folder_files(root)
    known = json.loads(Path(cache).read_text()) if cache is not None and Path(cache).is_file() else {}
    digests = {}
    for path in files:
        stat = path.stat()
        key, signature = str(path.resolve()), [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        if known.get(key, {}).get("signature") != signature:
            known[key] = {"signature": signature, "sha256": file_digest(path)}
        digests["." if path == root else path.relative_to(root).as_posix()] = known[key]["sha256"]
    if cache is not None:
        with atomic_output(cache) as tmp:
            tmp.write_text(json.dumps(known))
    return digests


def write_parquet(table: pa.Table, path: str | os.PathLike, row_group_size: int | None = None) -> None:
    """Write a Parquet file atomically, with a CRC-32 per page that `read_tagged_parquet` verifies."""
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, write_page_checksum=True)


def read_tagged_parquet(
    path: str | os.PathLike, metadata_key: bytes, columns: tuple[str, ...], error: type[Exception], stage: str
):
    """A Parquet file one of the stages wrote: (table, its JSON metadata), or `error` naming the file and the fault."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)  # every page's CRC: changed bytes are caught
    except FileNotFoundError:
        raise error(f"{path}: not found; run the `{stage}` stage first (`dvc repro {stage}`)") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise error(
            f"{path}: corrupt or not Parquet ({str(err).splitlines()[0]}); delete it and re-run the `{stage}` stage"
        ) from None
    return table, schema_metadata(path, table.schema, metadata_key, columns, error, stage)


def schema_metadata(
    path: str | os.PathLike,
    schema: pa.Schema,
    metadata_key: bytes,
    columns: tuple[str, ...],
    error: type[Exception],
    stage: str,
) -> dict:
    """The JSON metadata a stage wrote into a Parquet schema, its columns checked; `error` naming the fault."""
    raw = (schema.metadata or {}).get(metadata_key)
    if raw is None:
        raise error(f"{path}: no '{metadata_key.decode()}' metadata; expected a file written by the `{stage}` stage")
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise error(
            f"{path}: corrupt '{metadata_key.decode()}' metadata; delete it and re-run the `{stage}` stage"
        ) from None
    missing = set(columns) - set(schema.names)
    if missing:
        raise error(f"{path}: missing columns {sorted(missing)}")
    return metadata


class RowGroupReader:
    """Rows of Parquet files read on demand by row group: resident memory is bounded by `cache_bytes` of decoded
    row groups (least recently used go first), not by the number of rows. Every row group read is checked against
    its page CRCs; a fault raises `error` naming the file and the `stage` that writes it.

    `decode(table)` turns a row group's `columns` into tensors with one row per table row.
    """

    def __init__(
        self,
        paths: list[Path],
        columns: list[str],
        decode: Callable[[pa.Table], tuple[torch.Tensor, ...]],
        error: type[Exception],
        stage: str,
        cache_bytes: int = 256 * 2**20,
    ):
        self._paths, self._columns, self._decode, self._error, self._stage = paths, columns, decode, error, stage
        self._files = [self._open(path) for path in paths]
        self._groups = [(f, g) for f, file in enumerate(self._files) for g in range(file.num_row_groups)]
        sizes = [self._files[f].metadata.row_group(g).num_rows for f, g in self._groups]
        self._starts = torch.tensor([0, *sizes], dtype=torch.long).cumsum(0)
        self._cache: OrderedDict[int, tuple[torch.Tensor, ...]] = OrderedDict()
        self._cache_bytes, self._cached_bytes = cache_bytes, 0

    def _open(self, path: Path) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(path, page_checksum_verification=True)
        except FileNotFoundError:
            raise self._error(
                f"{path}: not found; run the `{self._stage}` stage first (`dvc repro {self._stage}`)"
            ) from None
        except (pa.ArrowInvalid, OSError) as err:
            raise self._corrupt(path, err) from None

    def _corrupt(self, path: Path, err: Exception) -> Exception:
        return self._error(
            f"{path}: corrupt or not Parquet ({str(err).splitlines()[0]}); delete it and re-run the "
            f"`{self._stage}` stage"
        )

    def schema(self, f: int = 0) -> pa.Schema:
        """The Arrow schema (with its metadata) of the f-th file."""
        return self._files[f].schema_arrow

    def __len__(self) -> int:
        return int(self._starts[-1])

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoded tensors of `rows` (positions over all files in order), in that order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        if len(rows) and not 0 <= int(rows.min()) <= int(rows.max()) < len(self):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        group = torch.searchsorted(self._starts, rows, right=True) - 1
        out: list[torch.Tensor] | None = None
        for g in group.unique().tolist():
            where = (group == g).nonzero().flatten()
            decoded = self._row_group(g)
            if out is None:
                out = [torch.empty((len(rows), *t.shape[1:]), dtype=t.dtype) for t in decoded]
            for target, values in zip(out, decoded):
                target[where] = values[rows[where] - self._starts[g]]
        return tuple(out) if out is not None else ()

    def _row_group(self, g: int) -> tuple[torch.Tensor, ...]:
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        f, within = self._groups[g]
        try:
            table = self._files[f].read_row_group(within, columns=self._columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise self._corrupt(self._paths[f], err) from None
        decoded = self._cache[g] = self._decode(table)
        self._cached_bytes += sum(t.nbytes for t in decoded)
        while self._cached_bytes > self._cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= sum(t.nbytes for t in dropped)
        return decoded
