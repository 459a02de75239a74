"""Memory options of distillation: gradient checkpointing, bf16 real denoiser, LoRA, compile, 8-bit AdamW."""

import copy

import pytest
import torch
from distributed_distill import tiny_teacher

from dmdlib.errors import ParamsError
from dmdlib.params import DistillParams
from dmdlib.training.distill import distill
from dmdlib.training.memory import add_lora, merge_lora, run_in_bfloat16

SHAPE = (1, 8, 8)


def params(**overrides):
    return DistillParams(
        **{**dict(steps=2, batch_size=2, reg_batch_size=0, lambda_reg=0.0, warmup_steps=1), **overrides}
    )


def input_gradient(denoiser, x, sigma):
    x = x.clone().requires_grad_(True)
    denoiser(x, sigma).square().sum().backward()
    return x.grad, [p.grad for p in denoiser.parameters() if p.grad is not None]


def test_gradient_checkpointing():
    """Kdiffusion gradient checkpointing gives the same gradients and survives a deep copy."""
    x, sigma = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5, 3.0])
    plain = tiny_teacher().requires_grad_(True)
    checkpointed = tiny_teacher().requires_grad_(True)
    checkpointed.enable_gradient_checkpointing()
    (x_grad, grads), (x_grad_ck, grads_ck) = input_gradient(plain, x, sigma), input_gradient(checkpointed, x, sigma)
    assert torch.allclose(x_grad, x_grad_ck, atol=1e-6)
    assert len(grads) == len(grads_ck) > 0 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, grads_ck))
    checkpointed.zero_grad(set_to_none=True)
    copied = copy.deepcopy(checkpointed)  # as the EMA is made: the copy must run its own weights, not the original's
    input_gradient(copied, x, sigma)
    assert all(p.grad is None for p in checkpointed.parameters()) and any(
        p.grad is not None for p in copied.parameters()
    )


def test_bf16_real_denoiser():
    """Bf16 real denoiser keeps float32 buffers and outputs and stays close."""
    teacher, low = tiny_teacher(), tiny_teacher()
    run_in_bfloat16(low)
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert all(b.dtype != torch.bfloat16 for b in low.buffers())
    x, sigma = torch.randn(4, *SHAPE), torch.tensor([0.05, 0.5, 5.0, 50.0])
    out = low(x, sigma)
    assert out.dtype == torch.float32
    assert torch.allclose(out, teacher(x, sigma), atol=0.05 * float(teacher(x, sigma).abs().max()))


def test_lora(tmp_path):
    """Lora trains adapters only and the saved generator is merged to the original layout."""
    teacher = tiny_teacher()
    generator, fake = distill(teacher, params(fake_lora_rank=2, generator_lora_rank=2), tmp_path / "ck.pt")
    assert generator.denoiser.state_dict().keys() == teacher.state_dict().keys()  # adapters folded in
    assert any(
        not torch.equal(a, b) for a, b in zip(generator.denoiser.state_dict().values(), teacher.state_dict().values())
    )
    lora = {name: value for name, value in fake.state_dict().items() if "lora_" in name}
    assert lora and any(
        value.abs().sum() > 0 for name, value in lora.items() if "lora_B" in name
    )  # B left zero: it trained
    base = {name.replace(".base_layer", ""): value for name, value in fake.state_dict().items() if "lora_" not in name}
    assert all(torch.equal(base[name], value) for name, value in teacher.state_dict().items())  # the frozen copy


def test_lora_merge_computes_what_the_adapted_network_computed():
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(4, 1, 1))
    add_lora(network, 2, "test")
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    x = torch.randn(2, 1, 6, 6)
    adapted = network(x)
    merge_lora(network)
    assert [type(m) for m in network] == [torch.nn.Conv2d, torch.nn.SiLU, torch.nn.Conv2d]
    assert torch.allclose(network(x), adapted, atol=1e-5)


def test_compiled_networks_train_like_eager_ones(tmp_path):
    eager, _ = distill(tiny_teacher(), params(steps=1), tmp_path / "a.pt")
    compiled, _ = distill(tiny_teacher(), params(steps=1, compile=True), tmp_path / "b.pt")
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_unsupported_options_say_which_param_and_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match="adamw8bit' needs a CUDA device"):
        distill(tiny_teacher(), params(optimizer="adamw8bit"), tmp_path / "ck.pt")
    with pytest.raises(ParamsError, match="distill.fake_lora_rank: Sequential has no torch.nn.Linear or Conv2d layers"):
        add_lora(torch.nn.Sequential(torch.nn.GroupNorm(1, 4)), 2, "distill.fake_lora_rank")
