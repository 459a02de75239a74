"""Memory options of distillation: LoRA adapters (peft), a bf16 frozen real denoiser, 8-bit AdamW (bitsandbytes)."""

from __future__ import annotations

import re
import types

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser
from dmdlib.errors import ParamsError

LORA_LAYERS = (nn.Linear, nn.Conv2d)  # what peft's LoRA adapts


def add_lora(module: nn.Module, rank: int, option: str) -> None:
    """Freeze `module` and give every Linear/Conv2d a trainable rank-`rank` LoRA adapter (peft; B starts at 0,
    so the module first computes exactly what it did). `option` names the param, for the error."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = sorted(name for name, layer in module.named_modules() if isinstance(layer, LORA_LAYERS))
    if not targets:
        raise ParamsError(
            f"{option}: {type(module).__name__} has no torch.nn.Linear or Conv2d layers for LoRA "
            "(EDM and EDM2 networks use their own layer classes); set it to null"
        )
    module.requires_grad_(False)
    exact = "|".join(re.escape(name) for name in targets)  # a string is matched whole; a list would also match suffixes
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=f"({exact})"), module)


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and drop it, so the module has its original layout again."""
    from peft.tuners.lora import LoraLayer

    for name, layer in list(module.named_modules()):
        if isinstance(layer, LoraLayer):
            layer.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, child, layer.get_base_layer())
    return module


def run_in_bfloat16(denoiser: Denoiser) -> None:
    """Cast the frozen real denoiser's weights to bf16 in place (half their memory) and run it under bf16 autocast,
    returning float32. Buffers such as noise schedules keep float32; the object (and e.g. its guidance scale) stays."""
    for parameter in denoiser.parameters():
        parameter.data = parameter.data.to(torch.bfloat16)
    denoiser.forward = types.MethodType(_bfloat16_forward, denoiser)


def _bfloat16_forward(self: Denoiser, x, sigma, cond=None):
    with torch.autocast(x.device.type, torch.bfloat16):
        return type(self).forward(self, x, sigma, cond).float()


def adamw(parameters: list[nn.Parameter], lr: float, betas, weight_decay: float, eight_bit: bool, device: torch.device):
    """torch's AdamW, or bitsandbytes' 8-bit AdamW (CUDA only): a quarter of the optimizer state's memory."""
    if not eight_bit:
        return torch.optim.AdamW(parameters, lr, betas, weight_decay=weight_decay)
    if device.type != "cuda":
        raise ParamsError(
            f"distill.optimizer 'adamw8bit' needs a CUDA device (bitsandbytes); this run is on {device.type}: "
            "use 'adamw'"
        )
    try:
        import bitsandbytes
    except ImportError:
        raise ParamsError("distill.optimizer 'adamw8bit' needs bitsandbytes: pip install bitsandbytes") from None
    return bitsandbytes.optim.AdamW8bit(parameters, lr, betas, weight_decay=weight_decay)
