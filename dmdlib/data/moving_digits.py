"""Moving digits: clips of the bundled MNIST digits sliding across the frame at a constant speed and bouncing off its
edges (Srivastava et al. 2015's Moving MNIST, one digit per clip, at the project's small sizes), deterministic from a
seed: the embedded video data."""

from __future__ import annotations

import numpy as np
from PIL import Image

DIGIT_SHARE = 0.75  # the digit's side as a share of the frame's: room to move, still legible at 16 pixels
SPEEDS = (-1, 1)  # pixels per frame along each axis


def _bounce(position: int, velocity: int, room: int) -> tuple[int, int]:
    """The next position along one axis within [0, room], reflected at the edges."""
    position += velocity
    if position < 0:
        return -position, -velocity
    if position > room:
        return 2 * room - position, -velocity
    return position, velocity


def moving_digit_clips(digits: np.ndarray, resolution: int, frames: int, seed: int) -> np.ndarray:
    """uint8 [N, resolution, resolution, frames]: digit i of uint8 [N, 28, 28], shrunk to DIGIT_SHARE of the frame,
    starting at a seeded place and moving at a seeded speed of one pixel per frame along each axis."""
    rng = np.random.default_rng(seed)
    side = round(DIGIT_SHARE * resolution)
    room = resolution - side
    clips = np.zeros((len(digits), resolution, resolution, frames), np.uint8)
    for i, digit in enumerate(digits):
        small = np.asarray(Image.fromarray(digit, mode="L").resize((side, side), Image.Resampling.BOX))
        (x, y), (vx, vy) = rng.integers(0, room + 1, 2), rng.choice(SPEEDS, 2)
        for frame in range(frames):
            clips[i, y : y + side, x : x + side, frame] = small
            x, vx = _bounce(int(x), int(vx), room)
            y, vy = _bounce(int(y), int(vy), room)
    return clips
