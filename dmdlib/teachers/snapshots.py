"""NVlabs EDM / EDM2 training snapshots (`network-snapshot-*.pkl`) read without running any of their code.

These pickles come from EDM's `torch_utils.persistence`: each network module is a record
(class name, embedded module source, state) rebuilt by `_reconstruct_persistent_obj`, which would
execute that source. `read_snapshot` unpickles with an allowlist of globals instead: the record
becomes inert data (the source is never looked at), tensors come from torch's own rebuilders and
storages through `torch.load(weights_only=True)`; any other global stops the load, naming it.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils

from dmdlib.errors import TeacherError


@dataclass
class PersistentRecord:
    """A persistent object as recorded: its class name and state (module source ignored)."""

    class_name: str
    state: dict


class ModuleRecord:
    """A plain torch container (ModuleDict, ...) inside a snapshot: only its state is kept."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


class EasyDictRecord(dict):
    """dnnlib's EasyDict (a dict with attribute access) as a plain dict."""


def _persistent_record(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("a persistent-object record without a class state")
    return PersistentRecord(str(meta["class_name"]), meta["state"])


def _storage_from_bytes(data: bytes):
    """A storage pickled as a legacy `torch.save` file, loaded weights-only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_multiarray = importlib.import_module("numpy._core.multiarray" if np.__version__ >= "2" else "numpy.core.multiarray")
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.nn.modules.container", "ModuleDict"): ModuleRecord,
    ("torch.nn.modules.container", "ModuleList"): ModuleRecord,
    ("torch.nn.modules.container", "Sequential"): ModuleRecord,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    **{
        (f"numpy.{core}.multiarray", name): getattr(_multiarray, name)
        for core in ("core", "_core")
        for name in ("scalar", "_reconstruct")
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, path: Path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise TeacherError(
                f"{self.path}: refers to {module}.{name}, which an EDM/EDM2 snapshot never needs; refused without "
                "running it (only network snapshots written by NVlabs' EDM or EDM2 training code load)"
            )
        return ALLOWED_GLOBALS[(module, name)]

    def persistent_load(self, pid):
        raise TeacherError(f"{self.path}: uses pickle persistent ids ({str(pid)[:40]}), not an EDM/EDM2 snapshot")


@dataclass
class Snapshot:
    """What a snapshot's network is: EDM class name, recorded constructor kwargs, state dict; EDM2's encoder."""

    class_name: str
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    encoder: dict | None = None  # {"class_name", "scale", "bias", "vae_name"} for EDM2


def read_snapshot(path: str | os.PathLike, key: str = "ema") -> Snapshot:
    """The network stored under `key` ('ema' in EDM's and EDM2's snapshots) and EDM2's encoder record."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(
            f"{path}: snapshot not found; download the .pkl beforehand (e.g. edm-cifar10-32x32-cond-vp.pkl)"
        )
    try:
        with path.open("rb") as handle:
            top = _RestrictedUnpickler(handle, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as err:
        raise TeacherError(f"{path}: not a readable EDM/EDM2 snapshot ({err})") from None
    if not isinstance(top, dict) or not isinstance(top.get(key), PersistentRecord):
        found = sorted(top) if isinstance(top, dict) else type(top).__name__
        raise TeacherError(f"{path}: no network under {key!r} (found {found}); expected an EDM/EDM2 network snapshot")
    network = top[key]
    if network.state.get("_init_args"):
        raise TeacherError(
            f"{path}: {network.class_name} was built with positional arguments; expected keyword arguments only"
        )
    init_kwargs = _plain(dict(network.state.get("_init_kwargs") or {}))
    encoder = top.get("encoder")
    return Snapshot(
        network.class_name,
        init_kwargs,
        _state_dict(network.state),
        _encoder(encoder) if isinstance(encoder, PersistentRecord) else None,
    )


def _state_dict(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """torch's state_dict() of a recorded module: parameters, persistent buffers, then sub-modules, in order."""
    tensors = {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            tensors[prefix + name] = value.detach()
    skipped = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skipped:
            tensors[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            tensors.update(_state_dict(child.state, f"{prefix}{name}."))
    return tensors


def _encoder(record: PersistentRecord) -> dict:
    state = record.state
    return {
        "class_name": record.class_name,
        "vae_name": state.get("vae_name"),
        "scale": _plain(state.get("scale")),
        "bias": _plain(state.get("bias")),
    }


def _plain(value: Any) -> Any:
    """numpy and tuple values as JSON-able Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
