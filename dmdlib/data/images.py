"""Conversions between uint8 images and model tensors, and sample grids."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from dmdlib.data.io import atomic_output

GRID_CLASSES = 10  # classes (rows) a class-conditional sample grid shows: ImageNet's 1000 would be 8000 samples


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C], clipped."""
    pixels = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def frames_of(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Grey clips [N, frames, H, W] as their frames [N * frames, 1, H, W] (images, frames 1, as they are)."""
    return x if frames == 1 else x.reshape(-1, 1, *x.shape[-2:])


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tile uint8 [N, H, W, C] images into one uint8 [rows*H, columns*W, C] picture; grey clips (C frames, C not 1
    or 3) as their frames side by side, `columns // C` clips (at least one) per row."""
    if images.shape[-1] not in (1, 3):
        frames = images.shape[-1]
        columns = frames * max(1, (columns or 1) // frames)
        images = images.transpose(0, 3, 1, 2).reshape(-1, *images.shape[1:3], 1)
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), np.uint8)
    for i, image in enumerate(images):
        top = padding + (i // columns) * (height + padding)
        left = padding + (i % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_gif(path: str | os.PathLike, frames: np.ndarray, scale: int = 1, frame_ms: int = 125) -> None:
    """Write uint8 [F, H, W, C] frames as a looping GIF atomically, each pixel drawn `scale` times wider."""
    pictures = [Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame) for frame in frames]
    if scale > 1:
        pictures = [p.resize((p.width * scale, p.height * scale), Image.Resampling.NEAREST) for p in pictures]
    with atomic_output(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)


def save_grid(path: str | os.PathLike, images: np.ndarray, columns: int | None = None, scale: int = 1) -> None:
    """Write a PNG grid of uint8 [N, H, W, C] images atomically, each pixel drawn `scale` times wider."""
    grid = make_grid(images, columns)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    with atomic_output(path) as tmp:
        picture.save(tmp, format="PNG")
