"""Write tests/fixtures/kdiffusion_reference.safetensors: reference outputs of k-diffusion itself.

The project builds k-diffusion's image_v1 network, Karras sigmas, Heun sampler and discrete schedule without the
package (dmdlib/networks/karras_unet.py, dmdlib/denoisers/); tests/test_karras_unet.py checks them against what this
script records. Needs the `kdiffusion` extra (numpy<2, Python <= 3.12):

    pip install -e '.[kdiffusion]' && python scripts/make_kdiffusion_fixture.py
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import k_diffusion
import torch
from k_diffusion import config as kconfig
from k_diffusion.external import DiscreteSchedule
from k_diffusion.sampling import get_sigmas_karras, sample_heun
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "kdiffusion_reference.safetensors"

CONFIGS = {
    # The default teacher's layout (dmdlib.teachers.loading.kdiffusion_config), small.
    "plain": {
        "model": {
            "type": "image_v1", "input_channels": 1, "input_size": [8, 8], "mapping_out": 16, "depths": [1, 2],
            "channels": [8, 16], "self_attn_depths": [False, False], "augment_wrapper": False,
            "mapping_cond_dim": 10, "sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0,
        },
        "dataset": {"type": "imagefolder", "num_classes": 10},
    },
    # k-diffusion's own defaults: augmentation wrapper on, self-attention, unconditional, RGB.
    "attention": {
        "model": {
            "type": "image_v1", "input_channels": 3, "input_size": [8, 8], "mapping_out": 16, "depths": [1, 1],
            "channels": [16, 32], "self_attn_depths": [False, True], "sigma_data": 0.5,
        },
        "dataset": {"type": "imagefolder"},
    },
}  # fmt: skip


def main() -> None:
    tensors, metadata = {}, {"k_diffusion": version("k-diffusion"), "configs": json.dumps(CONFIGS)}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = kconfig.make_model(kconfig.load_config(config)).eval()
        for key, value in model.state_dict().items():
            tensors[f"{name}.init.{key}"] = value.clone()
        with torch.no_grad():
            for param in model.parameters():  # every weight non-zero, so the reference sees every path
                param.add_(torch.randn_like(param) * 0.05)
        for key, value in model.state_dict().items():
            tensors[f"{name}.state.{key}"] = value.clone()
        channels, size = config["model"]["input_channels"], config["model"]["input_size"]
        x = torch.randn(3, channels, *size)
        sigma = torch.tensor([0.01, 0.7, 40.0])
        kwargs = {}
        if config["dataset"].get("num_classes"):
            kwargs["mapping_cond"] = torch.nn.functional.one_hot(torch.tensor([0, 3, 9]), 10).float()
            tensors[f"{name}.mapping_cond"] = kwargs["mapping_cond"]
        with torch.no_grad():
            tensors[f"{name}.output"] = model(x, sigma, **kwargs)
        tensors[f"{name}.x"], tensors[f"{name}.sigma"] = x, sigma

        denoiser = k_diffusion.layers.Denoiser(model, sigma_data=0.5)
        sigmas = get_sigmas_karras(6, 0.002, 80.0)
        noise = torch.randn(2, channels, *size) * sigmas[0]
        kwargs = {k: v[:2] for k, v in kwargs.items()}
        with torch.no_grad():
            tensors[f"{name}.denoised"] = denoiser(x, sigma, **{k: v[:1].repeat(3, 1) for k, v in kwargs.items()})
            tensors[f"{name}.heun"] = sample_heun(denoiser, noise, sigmas, extra_args=kwargs, disable=True)
        tensors[f"{name}.heun_noise"], tensors[f"{name}.heun_sigmas"] = noise, sigmas

    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    schedule = DiscreteSchedule(((1 - alphas_cumprod) / alphas_cumprod).sqrt().float(), quantize=False)
    probe = torch.tensor([0.005, 0.1, 1.0, 7.3, 80.0, 157.0])
    tensors["schedule.sigma"], tensors["schedule.t"] = probe, schedule.sigma_to_t(probe)
    tensors["karras_sigmas"] = get_sigmas_karras(1000, 0.002, 80.0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT), metadata=metadata)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
