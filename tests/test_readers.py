"""Pairs and prepared images read from disk by row group: the same values as reading everything, in any order,
through a cache smaller than the data."""

import numpy as np
import pytest
import torch

from dmdlib.data import prepared
from dmdlib.data.images import to_model_range
from dmdlib.data.prepared import TRAIN, ImageSet, PreparedImageReader, read_image_parquet, write_image_parquet
from dmdlib.errors import DataError
from dmdlib.training import pairs
from dmdlib.training.pairs import PairReader, ShardPlan, write_shard

META = {"teacher": "t", "sampler": "heun", "steps": 1, "guidance": 1.0, "shape": [1, 4, 4], "dtype": "float16"}


def test_pair_reader(tmp_path, monkeypatch):
    """Pair reader reads every pair of many row groups through a small cache."""
    monkeypatch.setattr(pairs, "ROW_GROUP_BYTES", 2 * 32 * 7)  # 7 pairs of 2 x 16 float16 per row group
    plan, noise, target = ShardPlan(50, 20), torch.randn(50, 1, 4, 4), torch.randn(50, 1, 4, 4)
    for shard in range(plan.shards):
        seeds = plan.seeds(shard)
        rows = slice(seeds.start, seeds.stop)
        write_shard(
            tmp_path / plan.name(shard), seeds, noise[rows], target[rows], list(range(seeds.start, seeds.stop)), META
        )
    reader = PairReader(tmp_path, META, cache_bytes=500)  # holds about one row group
    assert len(reader) == 50 and len(reader._rows._groups) == 8  # shards of 20, 20, 10: 3 + 3 + 2 row groups
    index = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:31].repeat(2)  # repeats, any order
    got_noise, got_target, labels = reader.batch(index)
    assert torch.equal(got_noise, noise[index].half().float()) and torch.equal(got_target, target[index].half().float())
    assert torch.equal(labels, index)
    with pytest.raises(IndexError):
        reader.batch(torch.tensor([50]))


def test_prepared_image_reader(tmp_path, monkeypatch):
    """Prepared image reader serves the training split as the whole file read does."""
    monkeypatch.setattr(prepared, "ROW_GROUP_BYTES", 64 * 10)  # 10 images of 8x8x1 per row group
    rng = np.random.default_rng(0)
    split = np.array([TRAIN if i % 4 else "heldout" for i in range(95)], dtype=object)
    images = ImageSet(
        rng.integers(0, 256, (95, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 95), split, ["a", "b", "c"]
    )
    write_image_parquet(tmp_path / "prepared.parquet", images)
    whole = read_image_parquet(tmp_path / "prepared.parquet")
    train = whole.subset(TRAIN)
    reader = PreparedImageReader(tmp_path / "prepared.parquet", TRAIN)
    assert len(reader) == len(train) == 71
    index = torch.tensor([70, 0, 33, 33, 5, 69])
    got, labels = reader.batch(index)
    assert torch.equal(got, to_model_range(whole.images[train[index.numpy()]]))
    assert torch.equal(labels, torch.from_numpy(whole.labels[train[index.numpy()]]))

    corrupt = bytearray((tmp_path / "prepared.parquet").read_bytes())
    corrupt[len(corrupt) // 3 : len(corrupt) // 3 + 8] = bytes(8)
    (tmp_path / "prepared.parquet").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="prepared.parquet: corrupt or not Parquet"):
        PreparedImageReader(tmp_path / "prepared.parquet", TRAIN).batch(torch.arange(71))
