"""Marker-free shift refinement by projection matching.

With the current alignment, each tilt is resampled into the specimen frame (tilt axis along y),
a weighted back-projection is made slice by slice (single-axis geometry: every image row is a 1D
projection of one x-z slice), and each tilt is compared with the re-projection of the tomogram
made without that tilt (leave one out, so a tilt is not matched against itself). The
correlation peak corrects the tilt's shift; a few rounds converge. The comparison uses the whole
image, so it is far less noisy than small patches, and it models the 3D specimen exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms.alignment.xcorr import bandpass, correlation_shift, taper


def to_specimen_frame(
    image: np.ndarray, z_rot_deg: float, shift_px: np.ndarray, magnification: float = 1.0
) -> np.ndarray:
    """Resample one tilt so that ``out(a, b) = image(m * Rz(z_rot) (a, b) + shift)``.

    (a, b) are px from the centre; b runs along the tilt axis. This undoes the in-plane part of
    the projection model, leaving the 1D projections of the x-z slices in the rows.
    """
    angle = np.radians(z_rot_deg)
    rotation = magnification * np.array(
        [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    )
    swap = np.array([[0, 1], [1, 0]])
    matrix_yx = swap @ rotation @ swap
    centre = np.array(image.shape, dtype=float) // 2
    offset = centre + swap @ np.asarray(shift_px, dtype=float) - matrix_yx @ centre
    return ndimage.affine_transform(
        np.asarray(image, dtype=np.float32), matrix_yx, offset=offset, order=1, mode="nearest"
    )


def _ramp(width: int, lowpass: float) -> np.ndarray:
    frequency = np.abs(scipy.fft.rfftfreq(width))
    return (frequency * np.exp(-((2 * frequency) ** 2) / (2 * lowpass**2))).astype(np.float32)


def _interp_rows(rows: np.ndarray, coordinate: np.ndarray) -> np.ndarray:
    """Linear interpolation of every row of ``rows`` (Ny, N) at centred ``coordinate`` (...)."""
    width = rows.shape[1]
    position = coordinate + width // 2
    left = np.floor(position).astype(int)
    fraction = (position - left).astype(np.float32)
    inside = (left >= 0) & (left < width - 1)
    left = np.clip(left, 0, width - 2)
    values = rows[:, left] * (1 - fraction) + rows[:, left + 1] * fraction
    return values * inside


class SliceGeometry:
    """Sampling of the x-z slices: x across the image width, z over ``thickness_px``."""

    def __init__(self, width: int, thickness_px: int):
        self.x = np.arange(width) - width // 2
        self.z = np.arange(thickness_px) - thickness_px // 2

    def back_project(self, rows: np.ndarray, tilt_deg: float) -> np.ndarray:
        """(Ny, Nz, Nx) volume of one tilt's filtered rows smeared along its rays."""
        c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
        coordinate = self.x[None, :] * c + self.z[:, None] * s
        return _interp_rows(rows, coordinate)

    def project(self, volume: np.ndarray, tilt_deg: float) -> np.ndarray:
        """(Ny, Nx) projection of a (Ny, Nz, Nx) volume along the rays of ``tilt_deg``."""
        c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
        a = self.x.astype(float)
        result = np.zeros((volume.shape[0], len(a)), dtype=np.float32)
        for k, z in enumerate(self.z):
            result += _interp_rows(volume[:, k, :], (a - z * s) / c)
        return result / c


def refine_shifts(
    stack: np.ndarray,
    y_tilt_deg: np.ndarray,
    z_rot_deg: np.ndarray,
    shifts_px: np.ndarray,
    thickness_px: float,
    rounds: int = 3,
    lowpass: float = 0.35,
    max_step_px: float = 4.0,
) -> tuple[np.ndarray, list[float]]:
    """Refine per-tilt shifts by projection matching (leave-one-out WBP re-projections).

    Parameters
    ----------
    stack : array (T, Y, X)
        Tilt images (work on a binned copy; shifts are in its pixels).
    y_tilt_deg, z_rot_deg : arrays (T,)
        Tilt angles and in-plane rotations of the current alignment.
    shifts_px : array (T, 2)
        Current shifts, px from the image centre.
    thickness_px : float
        Thickness of the reconstructed slab (should hold the specimen).
    rounds : int
        Rounds of reconstruct-compare-update.
    lowpass : float
        Low-pass of the filter and the correlation, fraction of Nyquist.
    max_step_px : float
        Largest correction per round.

    Returns
    -------
    shifts_px : array (T, 2) refined, and the RMS correction of each round (px).
    """
    stack = np.asarray(stack, dtype=np.float32)
    tilts = np.asarray(y_tilt_deg, dtype=float)
    z_rot = np.broadcast_to(np.asarray(z_rot_deg, dtype=float), tilts.shape)
    shifts = np.array(shifts_px, dtype=float, copy=True)
    geometry = SliceGeometry(stack.shape[2], max(8, int(round(thickness_px))))
    ramp = _ramp(stack.shape[2], lowpass)
    window = taper(stack.shape[1:], 0.1)
    weights = bandpass(stack.shape[1:], lowpass, 0.02)
    updates = []
    for _ in range(rounds):
        step = _match_round(stack, tilts, z_rot, shifts, geometry, ramp, window, weights,
                            max_step_px)
        step = _without_translation(step, tilts, z_rot)
        shifts += step
        updates.append(float(np.sqrt(np.mean(np.sum(step**2, axis=1)))))
    return shifts, updates


def _match_round(stack, tilts, z_rot, shifts, geometry, ramp, window, weights, max_step_px):
    """One reconstruct-and-compare pass: shift corrections (T, 2) from the correlation of each
    tilt with the re-projection of the tomogram made without it."""
    frames = np.stack([to_specimen_frame(stack[i], z_rot[i], shifts[i]) for i in range(len(tilts))])
    frames -= frames.mean(axis=(1, 2), keepdims=True)
    filtered = scipy.fft.irfft(
        scipy.fft.rfft(frames, axis=2, workers=-1) * ramp, n=stack.shape[2], axis=2, workers=-1
    ).astype(np.float32)
    contributions = [geometry.back_project(filtered[i], tilts[i]) for i in range(len(tilts))]
    volume = np.sum(contributions, axis=0)
    step = np.zeros_like(shifts)
    for i in range(len(tilts)):
        reference = geometry.project(volume - contributions[i], tilts[i])
        reference = (reference - reference.mean()) * window
        frame = frames[i] * window
        displacement, _ = correlation_shift(reference, frame, max_step_px, weights)
        angle = np.radians(z_rot[i])
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        step[i] = rotation @ displacement
    return step


def _without_translation(step: np.ndarray, tilts: np.ndarray, z_rot: np.ndarray) -> np.ndarray:
    """Remove the part of a shift update that a 3D translation of the specimen would explain."""
    rows = []
    for tilt, rot in zip(tilts, z_rot, strict=True):
        c, s = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
        cr, sr = np.cos(np.radians(rot)), np.sin(np.radians(rot))
        in_plane = np.array([[cr, -sr], [sr, cr]])
        tilted = np.array([[c, 0.0, s], [0.0, 1.0, 0.0]])
        rows.append(in_plane @ tilted)
    design = np.concatenate(rows)
    translation = np.linalg.lstsq(design, step.reshape(-1), rcond=None)[0]
    return step - (design @ translation).reshape(-1, 2)
