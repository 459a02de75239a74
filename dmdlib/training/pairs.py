"""Regression pairs (z, y): the teacher's deterministic ODE output y from noise z, as Parquet shards.

A pair depends only on its seed: the noise and the class label come from one RNG seeded with it
(EDM's habit), so batch size, shard and process count never change which pair a seed makes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dmdlib.data import tensor_codec
from dmdlib.data.io import RowGroupReader, read_tagged_parquet, schema_metadata, write_parquet
from dmdlib.denoisers import Denoiser
from dmdlib.errors import PairsError
from dmdlib.generators.seeds import seeded_inputs
from dmdlib.params import PairsParams
from dmdlib.teachers.loading import teacher_digest

log = logging.getLogger(__name__)

FORMAT = "dmd-pairs/1"
METADATA_KEY = b"dmd-pairs"
COLUMNS = ("seed", "noise", "target", "label", "prompt")
ROW_GROUP_BYTES = (
    2**20
)  # a row group is the unit `PairReader` reads: small, so a random batch reads little more than itself


def pair_metadata(teacher: Denoiser, params: PairsParams, prompts: list[str] | None = None) -> dict:
    """What a pair shard must agree on with the teacher, prompts and settings that read it."""
    conditions = hashlib.sha256(json.dumps(prompts).encode()).hexdigest() if prompts else teacher.num_classes
    return {
        "teacher": teacher_digest(teacher),
        "sampler": params.sampler,
        "steps": params.steps,
        "guidance": params.guidance,
        "shape": list(teacher.sample_shape),
        "dtype": params.dtype,
        "conditions": conditions,
    }


@dataclass(frozen=True)
class ShardPlan:
    """Which seeds each shard holds: shard i has seeds first_seed + [i * size, min((i + 1) * size, count))."""

    count: int
    shard_size: int
    first_seed: int = 0

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)

    def seeds(self, shard: int) -> range:
        start = shard * self.shard_size
        return range(self.first_seed + start, self.first_seed + min(start + self.shard_size, self.count))

    def name(self, shard: int) -> str:
        return f"shard-{shard:05d}.parquet"


def write_shard(
    path: Path,
    seeds: range,
    noise: torch.Tensor,
    target: torch.Tensor,
    labels: list[int],
    metadata: dict,
    prompts: list[str] | None = None,
) -> None:
    """Write one shard atomically; `metadata` describes the teacher, sampler and tensor encoding."""
    dtype = metadata["dtype"]
    table = pa.table(
        {
            "seed": pa.array(list(seeds), pa.int64()),
            "noise": pa.array(tensor_codec.encode(noise, dtype), pa.binary()),
            "target": pa.array(tensor_codec.encode(target, dtype), pa.binary()),
            "label": pa.array(labels, pa.int64()),
            "prompt": pa.array(prompts if prompts is not None else [None] * len(labels), pa.string()),
        }
    )
    row_bytes = 2 * max(1, len(table.column("noise")[0].as_py())) if len(table) else 1
    write_parquet(
        table.replace_schema_metadata({METADATA_KEY: json.dumps({**metadata, "format": FORMAT}).encode()}),
        path,
        row_group_size=max(1, ROW_GROUP_BYTES // row_bytes),
    )


def read_shard(path: Path, expected: dict, seeds: range | None = None) -> pa.Table:
    """Read a shard and check it against the expected metadata (and seeds); raise PairsError naming the mismatch."""
    table, found = read_tagged_parquet(path, METADATA_KEY, COLUMNS, PairsError, "pairs")
    _check_metadata(path, found, expected)
    if seeds is not None and table.column("seed").to_pylist() != list(seeds):
        raise PairsError(f"{path}: holds other seeds than {seeds.start}..{seeds.stop - 1}; delete it and re-run")
    return table


def _check_metadata(path: Path, found: dict, expected: dict) -> None:
    for key, value in {**expected, "format": FORMAT}.items():
        if key == "code" and found.get(key) != value:
            raise PairsError(f"{path}: made by other code ({str(found.get(key))[:12]}, now {value[:12]})")
        if found.get(key) != value:
            raise PairsError(
                f"{path}: {key} is {found.get(key)!r}, expected {value!r} (pairs made for another teacher or settings)"
            )


def generate_pairs(
    folder: Path,
    plan: ShardPlan,
    metadata: dict,
    sample: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    shape: tuple[int, ...],
    num_conditions: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[int], None] | None = None,
    prompts: list[str] | None = None,
) -> list[int]:
    """Make this process's shards (every world_size-th) that are missing or invalid; return those written.

    `sample(noise, ids)` is the teacher's ODE solver, `ids` the condition ids (class labels, or indices
    into `prompts`) or None. Complete, valid shards are skipped, so a killed run resumes where it stopped;
    the first invalid one is named.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written, remade = [], 0
    for shard in range(rank, plan.shards, world_size):
        path, seeds = folder / plan.name(shard), plan.seeds(shard)
        if path.exists():
            try:
                read_shard(path, metadata, seeds)
                if progress:
                    progress(len(seeds))
                continue
            except PairsError as err:
                remade += 1
                if remade == 1:
                    log.warning("re-making %s (and any other shard that does not match)", err)
        inputs = [seeded_inputs(seed, shape, num_conditions) for seed in seeds]
        noise = torch.stack([z for z, _ in inputs])
        labels = [label for _, label in inputs]
        targets = []
        for start in range(0, len(seeds), batch_size):
            batch_labels = torch.tensor(labels[start : start + batch_size]) if num_conditions else None
            targets.append(sample(noise[start : start + batch_size], batch_labels))
            if progress:
                progress(len(targets[-1]))
        texts = [prompts[label] for label in labels] if prompts is not None else None
        write_shard(path, seeds, noise, torch.cat(targets), labels, metadata, texts)
        written.append(shard)
    if remade > 1:
        log.warning("re-made %d shards that did not match", remade)
    return written


class PairReader:
    """The pairs of a shard folder, read on demand by Parquet row group (`RowGroupReader`): resident memory is
    flat in the number of pairs. Opening reads only the shards' metadata, checked against the teacher and
    settings the pairs are used with."""

    def __init__(self, folder: str | os.PathLike, expected: dict, cache_bytes: int = 256 * 2**20):
        folder = Path(folder)
        paths = sorted(folder.glob("shard-*.parquet"))
        if not paths:
            raise PairsError(f"{folder}: no pair shards; run the `pairs` stage first (`dvc repro pairs`)")
        self._rows = RowGroupReader(paths, ["noise", "target", "label"], self._decode, PairsError, "pairs", cache_bytes)
        made_by = set()
        for f, path in enumerate(paths):
            meta = schema_metadata(path, self._rows.schema(f), METADATA_KEY, COLUMNS, PairsError, "pairs")
            _check_metadata(path, meta, expected)
            made_by.add(str(meta.get("code")))
        self._shape, self._dtype = tuple(meta["shape"]), meta["dtype"]  # equal in every shard: `expected` has both
        self._paths, self._made_by = paths, sorted(made_by)

    def description(self) -> dict:
        """Which pairs these are, for a checkpoint's settings: their count, a digest of their seeds in order, and the
        code that made them (pairs re-made by changed code are other pairs)."""
        seeds = hashlib.sha256()
        for path in self._paths:
            seeds.update(pq.read_table(path, columns=["seed"]).column("seed").to_numpy().tobytes())
        return {"count": len(self), "seeds": seeds.hexdigest(), "code": self._made_by}

    def _decode(self, table: pa.Table) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise, target = (
            tensor_codec.decode(table.column(name).to_pylist(), self._dtype, self._shape)
            for name in ("noise", "target")
        )
        return noise, target, torch.tensor(table.column("label").to_pylist(), dtype=torch.long)

    def __len__(self) -> int:
        return len(self._rows)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noise, target, labels) of the pairs at `index` (positions in seed order), in that order."""
        return self._rows.take(index)
