"""Local resolution: the FSC of two half maps (or an even/odd tomogram pair) in a moving window.

At every point of a regular grid (step ``step_px``) both halves are cut into a cube of
``window_px`` and multiplied by one soft sphere (Cardone, Heymann & Steven 2013, blocres); the
FSC of the windowed pair crosses the threshold at the local resolution. The grid values are
interpolated (trilinearly) to every voxel. A locally filtered map is the map low-passed, voxel by
voxel, at its local resolution (interpolated between a ladder of low-passed copies).

Windows are processed in batches through one batched FFT: memory is
batch × window³ × 16 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms import fourier
from tomoweave.algorithms.volumes import spherical_mask

BATCH = 128


@dataclass
class LocalResolution:
    """Local resolution (Å) on a grid and at every voxel.

    map_a : (Z, Y, X) float32, interpolated to every voxel; 0 outside ``mask`` (if one was given).
    grid_a : (gz, gy, gx) float32, the value at each window centre (NaN where not computed).
    centres_zyx : tuple of three 1D int arrays, the window centres along z, y, x (voxel index).
    """

    map_a: np.ndarray
    grid_a: np.ndarray
    centres_zyx: tuple[np.ndarray, np.ndarray, np.ndarray]


def window_fsc_resolutions(half1: np.ndarray, half2: np.ndarray, centres_zyx: np.ndarray,
                           pixel_size_a: float, *, window_px: int, threshold: float = 0.143,
                           soft_px: float = 3.0,
                           progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Resolution (Å) of the windowed FSC around each centre.

    Parameters
    ----------
    half1, half2 : (Z, Y, X) float32
        Two independent halves on one grid (half maps, or even/odd tomograms).
    centres_zyx : (N, 3) int
        Window centres, voxel indices (z, y, x); windows reaching past the edge are zero-padded.
    pixel_size_a : float
    window_px : int
        Edge of the cubic window (even); the soft sphere has radius window/2 − soft_px − 1.
    threshold : float
        FSC threshold (0.143 for independent halves; blocres also offers 0.5).
    soft_px : float
        Raised-cosine edge of the sphere, pixels.
    progress : callable(fraction, message), optional
        Called after each batch of windows.
    """
    window = int(window_px)
    sphere = spherical_mask(window, window / 2 - soft_px - 1, soft_px)
    padded = [np.pad(np.asarray(h, np.float32), window // 2 + 1) for h in (half1, half2)]
    centres = np.asarray(centres_zyx, dtype=int).reshape(-1, 3) + window // 2 + 1
    out = np.empty(len(centres), dtype=np.float32)
    for start in range(0, len(centres), BATCH):
        chunk = centres[start:start + BATCH]
        boxes = [np.stack([_cut(volume, c, window) for c in chunk]) * sphere
                 for volume in padded]
        spectra = [scipy.fft.rfftn(b, axes=(1, 2, 3), workers=-1) for b in boxes]
        cross = fourier.shell_sums((spectra[0] * np.conj(spectra[1])).real, window)
        power = [fourier.shell_sums(np.abs(s) ** 2, window) for s in spectra]
        denominator = np.sqrt(power[0] * power[1])
        curves = np.where(denominator > 0, cross / np.maximum(denominator, 1e-300), 0.0)
        out[start:start + len(chunk)] = [
            fourier.resolution_at_threshold(curve, window, pixel_size_a, threshold)
            for curve in curves]
        if progress is not None:
            done = start + len(chunk)
            progress(done / len(centres), f"{done} of {len(centres)} windows")
    return out


def _cut(volume: np.ndarray, centre: np.ndarray, window: int) -> np.ndarray:
    low = centre - window // 2
    return volume[low[0]:low[0] + window, low[1]:low[1] + window, low[2]:low[2] + window]


def local_resolution(half1: np.ndarray, half2: np.ndarray, pixel_size_a: float, *,
                     window_px: int = 20, step_px: int = 4, threshold: float = 0.143,
                     mask: np.ndarray | None = None, soft_px: float = 3.0,
                     progress: Callable[[float, str], None] | None = None) -> LocalResolution:
    """Local-resolution map of two halves (half maps or even/odd tomograms, any shape).

    Parameters
    ----------
    half1, half2 : (Z, Y, X) float32
        Independent halves on one grid.
    pixel_size_a : float
    window_px : int
        Edge of the moving window (pixels); larger windows are steadier and less local.
    step_px : int
        Spacing of the window centres (pixels).
    threshold : float
        FSC threshold of the windowed FSC.
    mask : (Z, Y, X) float, optional
        Only centres where mask > 0.5 are computed (plus their grid neighbours, for the
        interpolation); voxels with mask ≤ 0.5 get 0 in ``map_a``.
    soft_px : float
        Soft edge of the window's sphere, pixels.
    progress : callable(fraction, message), optional
        Called after each batch of windows.
    """
    if half1.shape != half2.shape:
        raise ValueError(f"local resolution needs two halves of one shape, got {half1.shape} "
                         f"and {half2.shape}")
    if window_px < 8 or step_px < 1:
        raise ValueError(f"window {window_px} px, step {step_px} px: expected window ≥ 8, step ≥ 1")
    shape = np.asarray(half1.shape)
    axes = tuple(np.unique(np.r_[np.arange(n // 2 % step_px, n, step_px)]) for n in shape)
    grid_shape = tuple(len(a) for a in axes)
    wanted = np.ones(grid_shape, dtype=bool)
    if mask is not None:
        inside = np.asarray(mask)[np.ix_(*axes)] > 0.5
        wanted = ndimage.binary_dilation(inside, iterations=1) if inside.any() else inside
    index = np.argwhere(wanted)
    centres = np.stack([axes[d][index[:, d]] for d in range(3)], axis=1)
    grid = np.full(grid_shape, np.nan, dtype=np.float32)
    grid[wanted] = window_fsc_resolutions(half1, half2, centres, pixel_size_a,
                                          window_px=window_px, threshold=threshold,
                                          soft_px=soft_px, progress=progress)
    full = _interpolate_grid(grid, axes, tuple(shape))
    if mask is not None:
        full = np.where(np.asarray(mask) > 0.5, full, 0.0).astype(np.float32)
    return LocalResolution(full, grid, axes)


def _interpolate_grid(grid: np.ndarray, axes: tuple[np.ndarray, ...],
                      shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear interpolation of grid values (NaN filled from the nearest value) to ``shape``."""
    filled = grid.copy()
    missing = ~np.isfinite(filled)
    if missing.all():
        return np.zeros(shape, dtype=np.float32)
    if missing.any():
        nearest = ndimage.distance_transform_edt(missing, return_distances=False,
                                                 return_indices=True)
        filled = filled[tuple(nearest)]
    coordinates = [np.interp(np.arange(n), a, np.arange(len(a))) for n, a in zip(shape, axes,
                                                                                 strict=True)]
    mesh = np.meshgrid(*coordinates, indexing="ij")
    return ndimage.map_coordinates(filled, mesh, order=1, mode="nearest").astype(np.float32)


def locally_filtered(volume: np.ndarray, resolution_map_a: np.ndarray, pixel_size_a: float, *,
                     levels: int = 12) -> np.ndarray:
    """The volume low-passed at each voxel's local resolution.

    Parameters
    ----------
    volume : (Z, Y, X) float32
    resolution_map_a : (Z, Y, X)
        Local resolution in Å (values ≤ 0, outside a mask, take the worst resolution).
    pixel_size_a : float
    levels : int
        Number of low-passed copies (geometric ladder from the best to the worst resolution);
        between two rungs the result is interpolated linearly in 1/resolution.
    """
    values = np.asarray(resolution_map_a, dtype=float)
    valid = values[values > 0]
    if valid.size == 0:
        raise ValueError("locally_filtered: the resolution map holds no positive value")
    best, worst = max(float(valid.min()), 2.0 * pixel_size_a), float(valid.max())
    rungs = np.geomspace(best, max(worst, best * 1.0001), max(2, levels))
    frequency = 1.0 / np.where(values > 0, np.clip(values, best, rungs[-1]), rungs[-1])
    rung_frequency = 1.0 / rungs  # decreasing
    position = np.interp(-frequency, -rung_frequency, np.arange(len(rungs)))
    spectrum = scipy.fft.rfftn(np.asarray(volume, np.float32), workers=-1)
    out = np.zeros(volume.shape, dtype=np.float32)
    for level, resolution in enumerate(rungs):
        share = np.clip(1.0 - np.abs(position - level), 0.0, 1.0)
        if not share.any():
            continue
        filtered = scipy.fft.irfftn(
            spectrum * fourier.lowpass_filter(volume.shape, pixel_size_a, resolution),
            s=volume.shape, workers=-1)
        out += (share * filtered).astype(np.float32)
    return out


def values_at_positions(volume: np.ndarray, positions_zyx_px: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at voxel coordinates (N, 3) z, y, x (nearest at edges)."""
    coordinates = np.asarray(positions_zyx_px, dtype=float).reshape(-1, 3).T
    return ndimage.map_coordinates(np.asarray(volume, np.float32), coordinates, order=1,
                                   mode="nearest")
