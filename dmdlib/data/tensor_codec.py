"""Tensors in Parquet: raw little-endian bytes in a binary column, dtype and shape in the file metadata."""

from __future__ import annotations

import numpy as np
import torch

DTYPES = {"float32": np.float32, "float16": np.float16}


def encode(batch: torch.Tensor, dtype: str) -> list[bytes]:
    """One bytes value per sample of `batch`, in `dtype`, little-endian."""
    array = batch.detach().cpu().float().numpy().astype(np.dtype(DTYPES[dtype]).newbyteorder("<"))
    return [row.tobytes() for row in array]


def decode(values: list[bytes], dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `encode`: a float32 tensor [len(values), *shape]."""
    array = np.frombuffer(b"".join(values), dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
    return torch.from_numpy(array.astype(np.float32).reshape(len(values), *shape))
