"""Small shared pieces of correlation-based alignment: edge tapers and sub-pixel peak offsets."""

from __future__ import annotations

import numpy as np


def cosine_taper(shape: tuple[int, ...], fraction: float = 0.1, min_width_px: int = 1) -> np.ndarray:
    """Separable cosine edge taper, 1 inside and falling to 0 at the borders, float32.

    Parameters
    ----------
    shape : tuple of int
        Shape of the window (any number of axes).
    fraction : float
        Width of the falling edge on each side, as a fraction of the axis length.
    min_width_px : int
        Narrowest edge, in pixels.
    """
    window = np.ones((), dtype=np.float32)
    for size in shape:
        width = min(size // 2 or 1, max(min_width_px, int(round(fraction * size))))
        ramp = np.ones(size, dtype=np.float32)
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
        ramp[:width] = edge
        ramp[size - width:] = edge[::-1]
        window = np.multiply.outer(window, ramp)
    return window.astype(np.float32)


def parabolic_offset(left: float, centre: float, right: float) -> float:
    """Offset (−0.5 … 0.5 samples) of the maximum of a parabola through three samples around a
    peak; 0 when the samples do not curve downwards."""
    denominator = left - 2.0 * centre + right
    if denominator >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / denominator, -0.5, 0.5))
