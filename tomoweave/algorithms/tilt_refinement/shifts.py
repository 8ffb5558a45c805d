"""Where each particle really is in each tilt: correlation of its patch with its model.

For a patch X and its model M (both on a band, whitened by w = 1/σ²) the log-likelihood of a
displacement s (patch pixels; the particle sits at the predicted point + s), with the best
amplitude a, is a·C(s) − a² Σ w|M|² / 2 where

    C(s) = Re Σ_q w X(q) conj(M(q)) e^{2πi q·s / B}.

:func:`correlation_windows` evaluates C on a fine grid of displacements (separable DFT, no
padding), :func:`window_peaks` finds the maximum (parabolic sub-sample) and the curvature a·H
of the log-likelihood there: the Fisher information of the displacement, which the geometry
fit and the motion prior use as each measurement's weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoweave.algorithms.windows import parabolic_offset


def window_offsets_px(radius_px: float, step_px: float) -> np.ndarray:
    """Displacements of a window axis: −radius … radius in steps (S,) float."""
    count = int(np.ceil(radius_px / step_px - 1e-9))
    return np.arange(-count, count + 1) * float(step_px)


def correlation_windows(products: np.ndarray, box_px: int, offsets_px: np.ndarray,
                        centres_px: np.ndarray | None = None) -> np.ndarray:
    """C(centre + (ox, oy)) for all pairs on the grid ``offsets_px`` × ``offsets_px``.

    Parameters
    ----------
    products : (N, B, B) complex
        w X conj(M) on the centred grid (zero outside the band).
    box_px : int
        B, the patch box.
    offsets_px : (S,) float
        Window displacements along each axis, patch pixels.
    centres_px : (N, 2) float, optional
        Window centre (x, y) of each pair (default 0).

    Returns
    -------
    (N, S, S) float32, [pair, oy, ox].
    """
    products = np.asarray(products, dtype=np.complex128)
    q = (np.arange(box_px) - box_px // 2).astype(float)
    if centres_px is not None:
        centres = np.asarray(centres_px, dtype=float).reshape(-1, 2)
        ramp_x = np.exp(2j * np.pi * centres[:, 0, None] * q[None, :] / box_px)
        ramp_y = np.exp(2j * np.pi * centres[:, 1, None] * q[None, :] / box_px)
        products = products * ramp_y[:, :, None] * ramp_x[:, None, :]
    basis = np.exp(2j * np.pi * np.outer(offsets_px, q) / box_px)  # (S, B)
    windows = basis[None] @ products @ basis.T[None]  # [oy, ox]
    return windows.real.astype(np.float32)


@dataclass
class Peaks:
    """Best displacement of each window: ``shift_px`` (N, 2) x y relative to the window's
    centre, ``value`` (N,) C there, ``curvature`` (N, 2, 2) −∂²C/∂s² there (patch px⁻²)."""

    shift_px: np.ndarray
    value: np.ndarray
    curvature: np.ndarray


def window_peaks(windows: np.ndarray, offsets_px: np.ndarray, radius_px: float | None = None,
                 around_px: np.ndarray | None = None) -> Peaks:
    """Maximum of every window, sub-sample by parabolas along x and y, with the curvature from
    finite differences (clipped to be positive definite: a flat or saddle-shaped window gives
    no information).

    Parameters
    ----------
    windows : (N, S, S) from :func:`correlation_windows` on ``offsets_px`` (S,).
    radius_px : only maxima within this distance of ``around_px`` count (default: all).
    around_px : (N, 2) or (2,) displacement (x, y) the search is centred on (default 0).
    """
    windows = np.asarray(windows, dtype=float)
    count, size, _ = windows.shape
    step = float(offsets_px[1] - offsets_px[0])
    allowed = windows.copy()
    if radius_px is not None:
        around = np.zeros((count, 2)) if around_px is None else np.broadcast_to(
            np.asarray(around_px, dtype=float), (count, 2))
        ox, oy = np.meshgrid(offsets_px, offsets_px)
        distance = np.hypot(ox[None] - around[:, 0, None, None],
                            oy[None] - around[:, 1, None, None])
        allowed[distance > radius_px + 1e-9] = -np.inf
    best = allowed.reshape(count, -1).argmax(axis=1)
    iy, ix = np.unravel_index(best, (size, size))
    iy, ix = np.clip(iy, 1, size - 2), np.clip(ix, 1, size - 2)
    rows = np.arange(count)
    centre = windows[rows, iy, ix]
    left, right = windows[rows, iy, ix - 1], windows[rows, iy, ix + 1]
    down, up = windows[rows, iy - 1, ix], windows[rows, iy + 1, ix]
    dx = np.array([parabolic_offset(a, b, c) for a, b, c in zip(left, centre, right, strict=True)])
    dy = np.array([parabolic_offset(a, b, c) for a, b, c in zip(down, centre, up, strict=True)])
    hxx = (2 * centre - left - right) / step**2
    hyy = (2 * centre - down - up) / step**2
    hxy = -(windows[rows, iy + 1, ix + 1] - windows[rows, iy + 1, ix - 1]
            - windows[rows, iy - 1, ix + 1] + windows[rows, iy - 1, ix - 1]) / (4 * step**2)
    curvature = np.stack([np.stack([hxx, hxy], -1), np.stack([hxy, hyy], -1)], -2)
    curvature = _positive_definite(curvature)
    shift = np.stack([offsets_px[ix] + dx * step, offsets_px[iy] + dy * step], 1)
    return Peaks(shift, centre, curvature)


def _positive_definite(matrices: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrices)
    values = np.clip(values, 0.0, None)
    return np.einsum("nij,nj,nkj->nik", vectors, values, vectors)
