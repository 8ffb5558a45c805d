"""Coordinate origins and binning.

The centre of an axis of length N is index ``N // 2`` (the FFT centre). Particle positions are
stored in Å from the tomogram centre, ordered (x, y, z), so they do not change with binning.
Arrays are in MRC order (``[z, y, x]``); coordinate triples are (x, y, z).
"""

from __future__ import annotations

import numpy as np


def center_index(size: int | np.ndarray) -> int | np.ndarray:
    """Index of the centre of an axis of ``size`` samples: ``size // 2``."""
    return np.asarray(size) // 2 if not isinstance(size, int) else size // 2


def pixels_to_centered_a(
    positions_px: np.ndarray, size_xyz: tuple[int, ...], pixel_size_a: float
) -> np.ndarray:
    """Pixel indices (from the corner, x y [z] order) to Å from the volume centre.

    Parameters
    ----------
    positions_px : array, shape (N, D) or (D,)
        Positions in pixels counted from index 0 of each axis, D = 2 or 3.
    size_xyz : tuple of int, length D
        Size of the image or volume in pixels, (x, y[, z]).
    pixel_size_a : float
        Pixel size in Å of the grid the positions refer to.
    """
    positions_px = np.asarray(positions_px, dtype=float)
    centre = np.asarray(size_xyz, dtype=int) // 2
    return (positions_px - centre) * float(pixel_size_a)


def centered_a_to_pixels(
    positions_a: np.ndarray, size_xyz: tuple[int, ...], pixel_size_a: float
) -> np.ndarray:
    """Å from the volume centre to pixel indices from the corner (inverse of the above)."""
    positions_a = np.asarray(positions_a, dtype=float)
    centre = np.asarray(size_xyz, dtype=int) // 2
    return positions_a / float(pixel_size_a) + centre


def bin_pixel_size_a(pixel_size_a: float, binning: float) -> float:
    """Pixel size in Å after binning by ``binning`` (a factor ≥ 1)."""
    if binning <= 0:
        raise ValueError(f"binning must be positive, got {binning}")
    return float(pixel_size_a) * float(binning)


def binned_size(size: int, binning: float) -> int:
    """Number of samples of an axis of ``size`` samples after Fourier binning by ``binning``."""
    return max(1, int(round(size / binning)))
