"""Tilt-angle offset from image intensity (Beer-Lambert).

The tilt offset is invisible to bead or patch positions alone: turning every point about the tilt
axis is the same as adding an offset to every tilt. What fixes it is the slab: electrons cross
``thickness / cos(θ_true)`` of ice, so with a constant dose per tilt the mean intensity of tilt i
follows ``log I_i = a - b / cos(θ_i + offset)``, with ``b = thickness / mean free path``. A
series whose specimen is level shows this curve symmetric about 0°; the offset moves it.
"""

from __future__ import annotations

import numpy as np


def _fit_for_offset(log_intensity: np.ndarray, tilts_deg: np.ndarray, offset_deg: float):
    path = 1.0 / np.cos(np.radians(tilts_deg + offset_deg))
    design = np.column_stack([np.ones_like(path), -path])
    coeff, *_ = np.linalg.lstsq(design, log_intensity, rcond=None)
    residual = log_intensity - design @ coeff
    return float(residual @ residual), coeff


def tilt_offset_from_intensity(
    mean_intensity: np.ndarray, tilts_deg: np.ndarray, search_deg: float = 15.0
) -> tuple[float, float, float]:
    """Fit ``log I = a - b / cos(θ + offset)`` to the mean intensity of each tilt.

    Parameters
    ----------
    mean_intensity : array (T,)
        Mean of each tilt image (counts or any positive intensity with a constant dose per tilt).
    tilts_deg : array (T,)
        Nominal tilt angles, degrees.
    search_deg : float
        Offsets within ± this are searched.

    Returns
    -------
    offset_deg : float
        The tilt-angle offset (true tilt = nominal + offset).
    thickness_ratio : float
        ``b``, ice thickness over the inelastic mean free path (≤ 0 means no usable attenuation).
    rms_misfit : float
        RMS of the log-intensity residual (relative intensity error of the fit).
    """
    intensity = np.asarray(mean_intensity, dtype=float)
    tilts = np.asarray(tilts_deg, dtype=float)
    if intensity.shape != tilts.shape or len(tilts) < 5:
        raise ValueError("need one mean intensity per tilt and at least 5 tilts")
    if np.any(intensity <= 0) or not np.all(np.isfinite(intensity)):
        return 0.0, 0.0, float("inf")
    log_intensity = np.log(intensity)
    limit = min(search_deg, 89.0 - np.abs(tilts).max())
    grid = np.arange(-limit, limit + 1e-9, 0.05)
    costs = np.array([_fit_for_offset(log_intensity, tilts, g)[0] for g in grid])
    best = int(np.argmin(costs))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    for _ in range(40):  # golden-section refinement inside the bracketing grid cells
        a = high - 0.618 * (high - low)
        b = low + 0.618 * (high - low)
        if _fit_for_offset(log_intensity, tilts, a)[0] < _fit_for_offset(log_intensity, tilts, b)[0]:
            high = b
        else:
            low = a
    offset = 0.5 * (low + high)
    cost, coeff = _fit_for_offset(log_intensity, tilts, offset)
    return float(offset), float(coeff[1]), float(np.sqrt(cost / len(tilts)))
