"""The k-diffusion pieces built without k-diffusion, against reference outputs of k-diffusion 0.1.1 itself
(tests/fixtures/kdiffusion_reference.safetensors, written by tests/fixtures/make_kdiffusion_reference.py)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dmdlib.denoisers.base import karras_ladder
from dmdlib.denoisers.discrete import SigmaSchedule
from dmdlib.denoisers.karras import KarrasPreconditioner
from dmdlib.denoisers.sampling import heun_sample
from dmdlib.errors import TeacherError
from dmdlib.networks.karras_unet import build_image_v1
from dmdlib.teachers.loading import OneHotClasses, build_kdiffusion

FIXTURE = Path(__file__).parent / "fixtures" / "kdiffusion_reference.safetensors"
REFERENCE = load_file(FIXTURE)
with safe_open(str(FIXTURE), "pt") as handle:
    CONFIGS = json.loads(handle.metadata()["configs"])


def recorded(name: str, part: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}.{part}."
    return {key[len(prefix) :]: value for key, value in REFERENCE.items() if key.startswith(prefix)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_seed_gives_kdiffusions_initial_weights(name):
    torch.manual_seed(0)
    state = build_image_v1(CONFIGS[name]["model"]).state_dict()
    reference = recorded(name, "init")
    assert sorted(state) == sorted(reference)  # the same names: k-diffusion checkpoints load as they are
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_network_and_preconditioner_match_kdiffusion(name):
    network = build_image_v1(CONFIGS[name]["model"]).eval()
    network.load_state_dict(recorded(name, "state"), strict=True)
    x, sigma = REFERENCE[f"{name}.x"], REFERENCE[f"{name}.sigma"]
    kwargs = {"mapping_cond": REFERENCE[f"{name}.mapping_cond"]} if f"{name}.mapping_cond" in REFERENCE else {}
    with torch.no_grad():
        assert torch.allclose(network(x, sigma, **kwargs), REFERENCE[f"{name}.output"], atol=1e-6)
        first = {k: v[:1].repeat(3, 1) for k, v in kwargs.items()}
        denoised = KarrasPreconditioner(network, sigma_data=0.5)(x, sigma, **first)
    assert torch.allclose(denoised, REFERENCE[f"{name}.denoised"], atol=1e-6)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_heun_sampler_matches_kdiffusion(name):
    config = CONFIGS[name]
    denoiser = build_kdiffusion(config).eval()
    network = denoiser.inner_model
    (network.inner_model if isinstance(network, OneHotClasses) else network).load_state_dict(recorded(name, "state"))
    denoiser.model.sigma_data = 0.5
    cond = torch.tensor([0, 3]) if config["dataset"].get("num_classes") else None
    sigmas = REFERENCE[f"{name}.heun_sigmas"]
    noise = REFERENCE[f"{name}.heun_noise"] / sigmas[0]  # heun_sample scales unit noise by the first sigma
    assert torch.equal(karras_ladder(6, 0.002, 80.0), sigmas)
    assert torch.allclose(heun_sample(denoiser, noise, steps=6, cond=cond), REFERENCE[f"{name}.heun"], atol=1e-5)


def test_karras_ladder_and_discrete_schedule_match_kdiffusion():
    assert torch.equal(karras_ladder(1000, 0.002, 80.0), REFERENCE["karras_sigmas"])
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    schedule = SigmaSchedule(((1 - alphas_cumprod) / alphas_cumprod).sqrt().float())
    assert torch.allclose(schedule.sigma_to_t(REFERENCE["schedule.sigma"]), REFERENCE["schedule.t"], atol=1e-4)


@pytest.mark.skipif(
    importlib.util.find_spec("k_diffusion") is not None,
    reason="the kdiffusion extra is installed: it builds the transformer, so there is no error to show",
)
def test_other_kdiffusion_architectures_name_the_extra_they_need():
    config = {"model": {"type": "image_transformer_v2", "input_channels": 3, "input_size": [8, 8]}, "dataset": {}}
    with pytest.raises(TeacherError, match=r"dmd\[kdiffusion\]"):
        build_kdiffusion(config)
