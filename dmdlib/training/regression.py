"""The regression loss on (noise, teacher output) pairs: LPIPS, L2 or pseudo-Huber (paper eq. 9)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.errors import MissingWeightsError, ParamsError

log = logging.getLogger(__name__)

RegressionKind = Literal["lpips", "l2", "pseudo_huber"]
LPIPS_SIZE = 224  # LPIPS backbones were trained on 224x224 ImageNet crops


def lpips_backbone_file(net: str) -> Path:
    """Where torchvision (and so lpips) looks for the ImageNet backbone of LPIPS `net`."""
    from torchvision import models

    weights = {"alex": models.AlexNet_Weights, "vgg": models.VGG16_Weights, "squeeze": models.SqueezeNet1_1_Weights}
    if net not in weights:
        raise ParamsError(f"distill.lpips_net {net!r}: expected one of {sorted(weights)}")
    url = weights[net].IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class LPIPSLoss(nn.Module):
    """Per-sample LPIPS (Zhang et al. 2018) through the `lpips` package, for images in [-1, 1].

    Images smaller than 224 are upsampled bilinearly to 224 first and grey images are repeated
    to 3 channels, as DMD does for CIFAR-10 (paper Appendix C).
    """

    def __init__(self, net: Literal["alex", "vgg", "squeeze"] = "vgg"):
        super().__init__()
        backbone = lpips_backbone_file(net)
        if not backbone.is_file():
            raise MissingWeightsError(
                f"LPIPS ({net}) needs its ImageNet backbone weights at {backbone}, which is missing and cannot be "
                f"downloaded here. Download {backbone.name} from the torchvision model zoo on a connected machine and "
                f"copy it to {backbone.parent}/ (or set TORCH_HOME), or set the regression loss to 'l2' or "
                f"'pseudo_huber', or allow the fallback in params."
            )
        import lpips

        with warnings.catch_warnings():  # lpips calls torchvision with its deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = _for_lpips(x), _for_lpips(y)
        return self.model(x, y).flatten()


def _for_lpips(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[-1] < LPIPS_SIZE or x.shape[-2] < LPIPS_SIZE:
        x = F.interpolate(x, size=(LPIPS_SIZE, LPIPS_SIZE), mode="bilinear", align_corners=False)
    return x


def l2_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error."""
    return (x - y).pow(2).flatten(1).mean(1)


def pseudo_huber_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample sqrt(||x - y||^2 + c^2) - c with c = 0.00054 sqrt(d) (Song & Dhariwal 2023, iCT)."""
    dims = x[0].numel()
    c = 0.00054 * math.sqrt(dims)
    return ((x - y).pow(2).flatten(1).sum(1) + c**2).sqrt() - c


def make_regression_loss(
    kind: RegressionKind, lpips_net: str = "vgg", fallback: RegressionKind | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-sample regression loss `kind`; LPIPS falls back to `fallback` only when one is given."""
    if kind == "l2":
        return l2_loss
    if kind == "pseudo_huber":
        return pseudo_huber_loss
    if kind != "lpips":
        raise ParamsError(f"distill.regression_loss {kind!r}: expected 'lpips', 'l2' or 'pseudo_huber'")
    try:
        return LPIPSLoss(lpips_net)
    except MissingWeightsError as err:
        if fallback is None or fallback == "lpips":
            raise
        log.warning("LPIPS unavailable, using the '%s' regression loss instead as params allow: %s", fallback, err)
        return make_regression_loss(fallback)


def decoded_regression(regression: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], decoder) -> Callable:
    """The regression loss on decoded images (the paper's LPIPS on pixels); gradients flow through the decoder."""

    def loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_images = decoder(target)
        return regression(decoder(x), target_images)

    return loss
