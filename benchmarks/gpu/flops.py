"""Forward and forward+backward FLOPs at batch 1 of each network benchmarks/scale.py measures (CPU, real weights,
torch.utils.flop_counter: matmul/conv/attention FLOPs, 2 per multiply-add), written to flops.json beside it:
    python benchmarks/gpu/flops.py [model ...] > benchmarks/gpu/flops.json   (from the project root)"""

import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scale  # noqa: E402

models = sys.argv[1:] or ["cifar10-ddpmpp", "imagenet64-adm", "sd15-unet"]
torch.manual_seed(0)
rows = {}
for model in models:
    denoiser, make_cond = scale._denoiser(model)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(1, *denoiser.sample_shape, generator=rng)
    sigma = torch.full((1,), 2.0)
    cond = make_cond(1, rng)
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        denoiser(x, sigma, cond)
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as both:
        denoiser(x, sigma, cond).square().mean().backward()
    rows[model] = {
        "params_m": sum(p.numel() for p in denoiser.parameters()) / 1e6,
        "forward_gflop": fwd.get_total_flops() / 1e9,
        "forward_backward_gflop": both.get_total_flops() / 1e9,
    }
    print(model, rows[model], file=sys.stderr, flush=True)
    del denoiser
print(json.dumps(rows))
