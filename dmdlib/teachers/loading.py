"""Teachers behind the denoiser interface: build the default one, load real ones, and describe either.

Each family's record (`dmdlib.teachers.families`) points at its loader; the k-diffusion and EDM ones, the weight
checks and the digests that say which teacher made a file are here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dmdlib.data.io import atomic_output, files_digest, load_tensors
from dmdlib.denoisers import Denoiser, KarrasDenoiser
from dmdlib.denoisers.edm import EDMDenoiser, build_network
from dmdlib.errors import DataError, TeacherError
from dmdlib.networks.karras_unet import build_image_v1
from dmdlib.teachers.snapshots import read_snapshot

KDIFFUSION_KEYS = ("model_ema", "model")  # k-diffusion's train.py checkpoint keys, EMA first


UNCOND_CLASS = -1  # the label of "no class": a zero one-hot vector (trained by label dropout)


class OneHotClasses(nn.Module):
    """Feeds integer class labels to an `image_v1` model as a one-hot `mapping_cond`; UNCOND_CLASS gives zeros."""

    def __init__(self, inner_model: nn.Module, num_classes: int):
        super().__init__()
        self.inner_model = inner_model
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_cond: torch.Tensor | None = None) -> torch.Tensor:
        mapping_cond = None
        if class_cond is not None:
            known = class_cond.long() >= 0
            mapping_cond = (F.one_hot(class_cond.long().clamp_min(0), self.num_classes) * known[:, None]).to(x.dtype)
        return self.inner_model(x, sigma, mapping_cond=mapping_cond)


def kdiffusion_config(
    channels: int,
    resolution: int,
    widths: list[int],
    depths: list[int],
    mapping_width: int,
    num_classes: int,
    sigma_data: float,
    sigma_min: float,
    sigma_max: float,
    label_dropout: float = 0.0,
) -> dict[str, Any]:
    """A k-diffusion `image_v1` config dict for the default teacher (k-diffusion's own config format).

    `cond_dropout_rate` (k-diffusion's key) records label dropout: above 0 the model also serves
    UNCOND_CLASS, so classifier-free guidance can use it.
    """
    return {
        "model": {
            "type": "image_v1",
            "input_channels": channels,
            "input_size": [resolution, resolution],
            "mapping_out": mapping_width,
            "depths": depths,
            "channels": widths,
            "self_attn_depths": [False] * len(widths),
            "augment_wrapper": False,
            "mapping_cond_dim": num_classes,
            "sigma_data": sigma_data,
            "sigma_min": sigma_min,
            "sigma_max": sigma_max,
            "cond_dropout_rate": label_dropout,
        },
        "dataset": {"type": "imagefolder", "num_classes": num_classes},
    }


def kdiffusion_network(config: dict[str, Any]) -> nn.Module:
    """The network of a k-diffusion config: image_v1 built here; other model types by k-diffusion itself (an extra)."""
    if config["model"]["type"] == "image_v1":
        return build_image_v1(config["model"])
    try:
        from k_diffusion import config as kconfig
    except ImportError:
        raise TeacherError(
            f"k-diffusion model type {config['model']['type']!r}: only 'image_v1' is built without k-diffusion; "
            "install it with `pip install 'dmd[kdiffusion]'` (Python 3.11 or 3.12, numpy<2)"
        ) from None
    return kconfig.make_model(kconfig.load_config(config))


def build_kdiffusion(config: dict[str, Any]) -> KarrasDenoiser:
    """A `KarrasDenoiser` around the network a k-diffusion config describes (k-diffusion's own config format)."""
    inner = kdiffusion_network(config)
    model_config, num_classes = config["model"], config.get("dataset", {}).get("num_classes", 0)
    cond_key = None
    if num_classes and model_config["type"] == "image_v1":
        inner, cond_key = OneHotClasses(inner, num_classes), "class_cond"
    elif num_classes:
        cond_key = "class_cond"
    denoiser = KarrasDenoiser(
        inner,
        sigma_data=model_config.get("sigma_data", 1.0),
        sigma_min=model_config.get("sigma_min", 0.002),
        sigma_max=model_config.get("sigma_max", 80.0),
        cond_key=cond_key,
    )
    denoiser.sample_shape = (model_config["input_channels"], *model_config["input_size"])
    denoiser.num_classes = num_classes
    if num_classes and model_config["type"] == "image_v1" and model_config.get("cond_dropout_rate", 0) > 0:
        denoiser.uncond = torch.tensor([UNCOND_CLASS])
    denoiser.config = config
    return denoiser


def save_kdiffusion(path: str | os.PathLike, denoiser: KarrasDenoiser, config: dict[str, Any]) -> None:
    """Weights as safetensors with the config in the file metadata (the layout k-diffusion reads back)."""
    state = {name: tensor.detach().contiguous() for name, tensor in denoiser.inner_model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(config)})


def load_kdiffusion(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None) -> KarrasDenoiser:
    """A k-diffusion checkpoint: .safetensors (config in its metadata or given) or a train.py .pth + config JSON."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise TeacherError(
            f"{checkpoint}: k-diffusion checkpoint not found; expected a .safetensors file (config in its metadata) "
            "or a .pth from k-diffusion's train.py plus `config` (its JSON); download it beforehand"
        )
    if checkpoint.suffix == ".safetensors":
        try:
            with safe_open(str(checkpoint), "pt") as handle:
                embedded = (handle.metadata() or {}).get("config")
            state = load_file(str(checkpoint))
        except (SafetensorError, OSError) as err:
            raise TeacherError(
                f"{checkpoint}: not a readable .safetensors file ({err}); it may be truncated: download or "
                "export it again"
            ) from None
    else:
        embedded = None
        payload = load_tensors(
            checkpoint,
            TeacherError,
            "use the .safetensors export, or a .pth of tensors only as "
            "k-diffusion's train.py writes (never load such a file with weights_only=False)",
        )
        key = next((k for k in KDIFFUSION_KEYS if isinstance(payload, dict) and k in payload), None)
        state = payload[key] if key else payload
    if config is None and embedded is None:
        raise TeacherError(f"{checkpoint}: no config in the file; give the k-diffusion config JSON as teacher.config")
    source = f"teacher.config {config}" if config is not None else f"{checkpoint}: the config in its metadata"
    try:
        denoiser = build_kdiffusion(json.loads(Path(config).read_text() if config is not None else embedded))
    except FileNotFoundError:
        raise TeacherError(
            f"teacher.config {config}: not found; give the k-diffusion config JSON of {checkpoint}"
        ) from None
    except json.JSONDecodeError as err:
        raise TeacherError(f"{source}: not valid JSON ({err})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise TeacherError(
            f"{source}: not a k-diffusion model config ({type(err).__name__}: {err}); expected k-diffusion's "
            "JSON with a 'model' section (type, input_channels, input_size, ...)"
        ) from None
    load_weights(denoiser.inner_model, state, checkpoint, "the config")
    return denoiser


def load_weights(
    network: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike, described_by: str
) -> None:
    """load_state_dict(strict=True), naming the keys that are missing, unexpected or of another shape when they do not
    fit (fp16-stored weights, EDM2's, are upcast into the float32 parameters by the copy)."""
    own = network.state_dict()
    problems = {
        "missing": [key for key in own if key not in state],
        "unexpected": [key for key in state if key not in own],
        "of another shape": [
            f"{key} {tuple(state[key].shape)} for {tuple(own[key].shape)}"
            for key in own
            if key in state and state[key].shape != own[key].shape
        ],
    }
    found = [
        f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for what, keys in problems.items()
        if keys
    ]
    if found:
        raise TeacherError(f"{source}: weights do not fit the network {described_by} describes: {'; '.join(found)}")
    network.load_state_dict(state, strict=True)


EDM_CLASSES = {"edm": ("VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond"), "edm2": ("Precond",)}
LATENT_ENCODERS = {"edm": (), "edm2": ("StabilityVAEEncoder",)}
PIXEL_ENCODERS = ("StandardRGBEncoder",)  # EDM2's pixel encoder maps [0, 255] to [-1, 1]; EDM snapshots have none
EDM_WEIGHTS_FILE, EDM_CONFIG_FILE = (
    "network.safetensors",
    "network.json",
)  # what the teacher stage converts a snapshot to


def convert_edm_snapshot(snapshot: str | os.PathLike, kind: str, weights: Path, config: Path) -> dict[str, Any] | None:
    """Read an NVlabs snapshot safely, check it loads into the project's network, write safetensors + JSON config
    ({"class_name", "init_kwargs"}). Returns EDM2's latent encoder record (VAE name, scale, bias), None in pixel space.
    """
    record = read_snapshot(snapshot)
    if record.class_name not in EDM_CLASSES[kind]:
        other = next((k for k, names in EDM_CLASSES.items() if record.class_name in names), None)
        hint = f"; set teacher.kind: {other}" if other else ""
        raise TeacherError(
            f"{snapshot}: holds a {record.class_name} network; teacher.kind {kind!r} expects one of "
            f"{EDM_CLASSES[kind]}{hint}"
        )
    encoder = record.encoder
    if encoder is not None and encoder["class_name"] not in (*LATENT_ENCODERS[kind], *PIXEL_ENCODERS):
        raise TeacherError(
            f"{snapshot}: encoder {encoder['class_name']!r} is not supported; expected "
            f"{(*LATENT_ENCODERS[kind], *PIXEL_ENCODERS)}"
        )
    try:
        network = build_network(record.class_name, record.init_kwargs)
    except (TypeError, ValueError) as err:
        raise TeacherError(
            f"{snapshot}: the {record.class_name} record's constructor arguments do not build the network ({err})"
        ) from None
    load_weights(network, record.state_dict, snapshot, "its config")
    save_file({name: tensor.contiguous() for name, tensor in record.state_dict.items()}, str(weights))
    config.write_text(json.dumps({"class_name": record.class_name, "init_kwargs": record.init_kwargs}, indent=2))
    return encoder if encoder is not None and encoder["class_name"] in LATENT_ENCODERS[kind] else None


def load_edm(weights: str | os.PathLike, config: str | os.PathLike) -> EDMDenoiser:
    """An EDM/EDM2 teacher converted by the `teacher` stage: safetensors weights and their JSON config."""
    for path in (weights, config):
        if not Path(path).is_file():
            raise TeacherError(f"{path}: not found; re-run the `teacher` stage to convert the EDM snapshot")
    description = json.loads(Path(config).read_text())
    network = build_network(description["class_name"], description["init_kwargs"])
    load_weights(network, load_file(str(weights)), weights, "its config")
    return EDMDenoiser(network)


def teacher_digest(denoiser: nn.Module) -> str:
    """SHA-256 of a denoiser's weights and buffers (names, dtypes, shapes and bytes) and of how they are read (every
    module's class and settings: `module_settings`): which teacher made a file. One UNet read as epsilon or v
    prediction, or a flow network at another shift, is another teacher."""
    digest = hashlib.sha256()
    for name, tensor in sorted(denoiser.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(json.dumps(module_settings(denoiser), sort_keys=True).encode())
    return digest.hexdigest()


def module_settings(module: nn.Module) -> dict[str, dict[str, Any]]:
    """name -> {class, settings} of every submodule: its public attributes that are plain values (a prediction type,
    a shift, a sigma range, a scheduler config, a small tensor such as the 'no condition' label) and a diffusers
    model's config, without the keys that name where it was read from (`_name_or_path` and the like)."""
    described = {}
    for name, child in module.named_modules():
        attributes = {key: value for key, value in vars(child).items() if not key.startswith("_") and key != "training"}
        if isinstance(getattr(child, "config", None), dict):
            attributes["config"] = child.config
        plain = {key: _plain(value) for key, value in attributes.items()}
        described[name] = {"class": type(child).__name__, **{k: v for k, v in plain.items() if v is not _NOT_PLAIN}}
    return described


_NOT_PLAIN = object()


def _plain(value: Any) -> Any:
    """A JSON-able copy of `value` (dict keys starting with '_' left out), or _NOT_PLAIN."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 1024 else _NOT_PLAIN
    if isinstance(value, (list, tuple)):
        items = [_plain(item) for item in value]
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items) else items
    if isinstance(value, dict):
        items = {str(key): _plain(item) for key, item in value.items() if not str(key).startswith("_")}
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items.values()) else items
    return _NOT_PLAIN


def check_takes_its_shape(denoiser: Denoiser, source: str | os.PathLike, hint: str) -> None:
    """One forward of an image teacher at its sample shape (batch 1, sigma 1, class 0): a size its network cannot take
    stops here, named, rather than deep inside training. `hint` says which param sets the size."""
    cond, training = (torch.zeros(1, dtype=torch.long) if denoiser.num_classes else None), denoiser.training
    try:  # in eval mode, on a forked RNG: the probe changes neither dropout's draws nor any running statistics
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            denoiser.eval()(torch.zeros(1, *denoiser.sample_shape), torch.ones(1), cond)
    except (RuntimeError, ValueError) as err:
        shape = "x".join(map(str, denoiser.sample_shape))
        raise TeacherError(
            f"{source}: its network cannot take {shape} inputs ({str(err).splitlines()[0][:200]}); {hint}"
        ) from None
    finally:
        denoiser.train(training)


def source_digest(paths: dict[str, str | None], cache: str | os.PathLike | None = None) -> str:
    """One SHA-256 of the files an imported teacher is read from (`paths`: teacher.path, .config, .vae; None for
    the ones not set): it changes when any of their bytes do, whatever their place on this machine."""
    try:
        files = {key: files_digest(path, cache) for key, path in sorted(paths.items()) if path}
    except DataError as err:
        raise TeacherError(f"teacher: {err}; give the local path of a downloaded teacher") from None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
