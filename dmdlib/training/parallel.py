"""Data parallelism through torch's own engines: DDP (composable `replicate`) or FSDP2 (`fully_shard`).

Both act on a module in place (hooks on its forward and on its parameters' gradients), so the module
keeps its state-dict keys and is called exactly as before; backward leaves gradients averaged over
processes, with the communication bucketed and overlapped with the backward pass.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

# torch.distributed's DDP, FSDP and state-dict modules are imported where used: together they take half a second to
# import, which every stage's --help would pay (benchmarks/startup.py).

Strategy = Literal["ddp", "fsdp"]


def distribute(module: nn.Module, strategy: Strategy, device: torch.device) -> None:
    """Make `module` data-parallel over the default process group: replicated (DDP) or sharded (FSDP2).

    FSDP shards each parameter-holding entry of the network's outermost ModuleLists/ModuleDicts (UNet
    and transformer blocks) as its own unit, then the rest, so one block's full weights exist at a time.
    """
    from torch.distributed._composable import replicate
    from torch.distributed.fsdp import fully_shard

    if strategy == "ddp":
        replicate(module, device_ids=[device.index] if device.type == "cuda" else None)
        return
    for block in _outermost_blocks(module):
        fully_shard(block)
    fully_shard(module)


def reshard(module: nn.Module) -> None:
    """Free the whole weights FSDP keeps gathered after a forward no backward follows (the root unit keeps them for
    the backward it expects): a module's parameters are its shards again, as the EMA update and optimizer need."""
    from torch.distributed.fsdp import FSDPModule

    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()


def _outermost_blocks(module: nn.Module) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            blocks += [entry for entry in child.children() if any(True for _ in entry.parameters())]
        else:
            blocks += _outermost_blocks(child)
    return blocks


def full_state(module: nn.Module, strategy: Strategy | None, everywhere: bool = False) -> dict:
    """The module's whole state dict: gathered from the shards under FSDP (on rank 0 only, in CPU memory,
    unless `everywhere`); otherwise its plain state dict."""
    if strategy != "fsdp":
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))


def load_full_state(module: nn.Module, state: dict, strategy: Strategy | None) -> None:
    """Load a whole state dict (as `full_state` returns) into a module, each rank keeping its shard under FSDP."""
    if strategy != "fsdp":
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, strategy: Strategy | None) -> dict:
    """The optimizer's whole state (gathered under FSDP, on rank 0), keyed by parameter name there."""
    if strategy != "fsdp":
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, state: dict, strategy: Strategy | None
) -> None:
    if strategy != "fsdp":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))
