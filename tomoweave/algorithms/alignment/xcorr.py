"""Coarse alignment: cross-correlation of neighbouring tilts with cosine stretching.

A thin specimen seen at tilt θ is compressed by cos θ across the tilt axis. Before two
neighbouring tilts are correlated, the one farther from 0° is stretched into the geometry of the
nearer one, so that their features coincide up to a translation. Shifts are chained from the tilt
nearest 0° outwards and reported in the convention of the projection model: the position (px,
from the image centre N // 2) where the tomogram centre lands in each tilt, 0 at the reference.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms.windows import cosine_taper, parabolic_offset


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` × ``factor`` blocks of a 2D image (the edge remainder is dropped)."""
    if factor <= 1:
        return np.asarray(image, dtype=np.float32)
    ny, nx = (s // factor for s in image.shape)
    blocks = np.asarray(image[: ny * factor, : nx * factor], dtype=np.float32)
    return blocks.reshape(ny, factor, nx, factor).mean(axis=(1, 3))


def binned_to_full_px(
    position_px: np.ndarray, factor: int, full_size_xy: tuple[int, int]
) -> np.ndarray:
    """Centred (x, y) positions on a ``bin_image`` grid to centred positions at full size.

    Block k covers full pixels ``k*f .. k*f + f - 1`` (centre ``k*f + (f-1)/2``); both grids
    count from their own centre index N // 2.
    """
    full = np.asarray(full_size_xy, dtype=int)
    binned = full // factor
    index = np.asarray(position_px, dtype=float) + binned // 2
    return index * factor + (factor - 1) / 2.0 - full // 2


def taper(shape: tuple[int, int], fraction: float = 0.1) -> np.ndarray:
    """Cosine edge taper (1 inside, falling to 0 over ``fraction`` of each side), float32."""
    return cosine_taper(shape, fraction)


def stretch_matrix(target_tilt_deg: float, source_tilt_deg: float, z_rot_deg: float) -> np.ndarray:
    """2×2 matrix (x, y) mapping a position seen at ``source_tilt`` to where it is at ``target``.

    For a thin specimen: compression across the tilt axis is ``cos θ``; the axis lies along
    ``Rz(z_rot) @ ŷ`` in the image, so the compressed direction is ``(cos z_rot, sin z_rot)``.
    """
    angle = np.radians(z_rot_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.cos(np.radians(target_tilt_deg)) / np.cos(np.radians(source_tilt_deg))
    return rotation @ np.diag([scale, 1.0]) @ rotation.T


def warp_centered(image: np.ndarray, matrix_xy: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample ``out(v) = image(matrix_xy @ v)`` with v in (x, y) pixels from the centre N // 2."""
    swap = np.array([[0, 1], [1, 0]])
    matrix_yx = swap @ np.asarray(matrix_xy, dtype=float) @ swap
    centre = np.array(image.shape, dtype=float) // 2
    offset = centre - matrix_yx @ centre
    return ndimage.affine_transform(
        np.asarray(image, dtype=np.float32), matrix_yx, offset=offset, order=order, mode="nearest"
    )


def bandpass(shape: tuple[int, int], lowpass: float, highpass: float) -> np.ndarray:
    """Gaussian band-pass weights on the rfft2 grid; cut-offs as fractions of Nyquist."""
    fy = scipy.fft.fftfreq(shape[0])[:, None] * 2.0
    fx = scipy.fft.rfftfreq(shape[1])[None, :] * 2.0
    radius2 = fy**2 + fx**2
    weight = np.exp(-radius2 / (2.0 * lowpass**2)) if lowpass > 0 else np.ones_like(radius2)
    if highpass > 0:
        weight = weight * (1.0 - np.exp(-radius2 / (2.0 * highpass**2)))
    return weight.astype(np.float32)


def subpixel_peak(surface: np.ndarray, index: tuple[int, int]) -> tuple[float, float]:
    """(y, x) of a peak refined by a parabola through it and its two neighbours on each axis."""
    result = []
    for axis in range(2):
        i = index[axis]
        if 0 < i < surface.shape[axis] - 1:
            before, after = list(index), list(index)
            before[axis], after[axis] = i - 1, i + 1
            result.append(i + parabolic_offset(surface[tuple(before)], surface[index],
                                               surface[tuple(after)]))
        else:
            result.append(float(i))
    return result[0], result[1]


def correlation_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    max_shift_px: float,
    filter_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Displacement d (x, y, px) with ``moving(v) ≈ reference(v - d)``, and its peak strength.

    Both images should be mean-free and tapered. The strength is the peak height in standard
    deviations of the correlation map (a rough signal-to-noise of the match).
    """
    spectrum = np.conj(scipy.fft.rfft2(reference, workers=-1)) * scipy.fft.rfft2(moving, workers=-1)
    if filter_weights is not None:
        spectrum *= filter_weights
    correlation = scipy.fft.fftshift(scipy.fft.irfft2(spectrum, s=reference.shape, workers=-1))
    centre = np.array(reference.shape) // 2
    yy, xx = np.ogrid[: reference.shape[0], : reference.shape[1]]
    allowed = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= max_shift_px**2
    masked = np.where(allowed, correlation, -np.inf)
    index = np.unravel_index(int(np.argmax(masked)), masked.shape)
    peak_y, peak_x = subpixel_peak(correlation, index)
    std = float(correlation.std())
    strength = float((correlation[index] - correlation.mean()) / std) if std > 0 else 0.0
    return np.array([peak_x - centre[1], peak_y - centre[0]]), strength


def _prepare(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return (image - image.mean()) * window


def tilt_order(tilts_deg: np.ndarray) -> tuple[int, list[list[int]]]:
    """Reference tilt (nearest 0°) and the two chains of tilt indices walking outwards from it."""
    tilts = np.asarray(tilts_deg, dtype=float)
    order = np.argsort(tilts, kind="stable")
    ref_rank = int(np.argmin(np.abs(tilts[order])))
    upward = [int(i) for i in order[ref_rank:]]
    downward = [int(i) for i in order[: ref_rank + 1][::-1]]
    return int(order[ref_rank]), [upward, downward]


def coarse_align(
    stack: np.ndarray,
    tilts_deg: np.ndarray,
    z_rot_deg: float,
    max_shift_fraction: float = 0.25,
    lowpass: float = 0.3,
    highpass: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tilt shifts by chained cross-correlation of neighbouring tilts with cosine stretching.

    Parameters
    ----------
    stack : array (T, Y, X)
        Tilt images (any binning; shifts come out in its pixels).
    tilts_deg : array (T,)
        Tilt angles in degrees, in the order of the stack (need not be sorted).
    z_rot_deg : float
        In-plane rotation of the model (the tilt-axis angle), degrees.
    max_shift_fraction : float
        Largest shift searched between neighbours, as a fraction of the smaller image side.
    lowpass, highpass : float
        Gaussian band-pass of the correlation, fractions of Nyquist.

    Returns
    -------
    shifts_px : array (T, 2), x y, px from the image centre, 0 for the tilt nearest 0°.
    strengths : array (T,), the correlation peak strength of each tilt with its inner neighbour.
    """
    stack = np.asarray(stack, dtype=np.float32)
    tilts = np.asarray(tilts_deg, dtype=float)
    if stack.ndim != 3 or stack.shape[0] != len(tilts):
        raise ValueError(f"stack must be (T, Y, X) with T = {len(tilts)}, got {stack.shape}")
    if np.any(np.abs(tilts) >= 89.0):
        raise ValueError("tilt angles must lie within ±89°")
    window = taper(stack.shape[1:])
    weights = bandpass(stack.shape[1:], lowpass, highpass)
    max_shift = max_shift_fraction * min(stack.shape[1:])
    shifts = np.zeros((len(tilts), 2))
    strengths = np.full(len(tilts), np.inf)
    ref, chains = tilt_order(tilts)
    for chain in chains:
        for inner, outer in zip(chain[:-1], chain[1:], strict=True):
            # outer image resampled into the inner one's geometry: stretched(v) = outer(M v)
            matrix = stretch_matrix(tilts[outer], tilts[inner], z_rot_deg)
            stretched = warp_centered(stack[outer], matrix)
            displacement, strengths[outer] = correlation_shift(
                _prepare(stack[inner], window), _prepare(stretched, window), max_shift, weights
            )
            shifts[outer] = matrix @ (shifts[inner] + displacement)
    return shifts, strengths
