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
from tomoweave.algorithms.windows import parabolic_offset


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


class HeldOutMatcher:
    """Leave-one-out projection matching of one binned stack at fixed tilt angles."""

    def __init__(self, stack: np.ndarray, tilts_deg: np.ndarray, thickness_px: float,
                 lowpass: float = 0.35):
        self.stack = np.asarray(stack, dtype=np.float32)
        self.tilts = np.asarray(tilts_deg, dtype=float)
        self.geometry = SliceGeometry(stack.shape[2], max(8, int(round(thickness_px))))
        self.ramp = _ramp(stack.shape[2], lowpass)
        self.window = taper(stack.shape[1:], 0.1)
        self.weights = bandpass(stack.shape[1:], lowpass, 0.02)

    def _filter(self, image: np.ndarray) -> np.ndarray:
        spectrum = scipy.fft.rfft2(image * self.window, workers=-1) * self.weights
        return scipy.fft.irfft2(spectrum, s=image.shape, workers=-1)

    def evaluate(self, z_rot: np.ndarray, shifts: np.ndarray, max_step_px: float = 4.0):
        """Held-out consistency of an alignment and the shift corrections it suggests.

        Each tilt is compared with the re-projection of the tomogram made without it: the
        score of a tilt is their normalised correlation (band-passed, tapered), so no tilt is
        scored against itself. Returns (mean score, per-tilt scores (T,), corrections (T, 2)).
        """
        tilts, geometry = self.tilts, self.geometry
        frames = np.stack([to_specimen_frame(self.stack[i], z_rot[i], shifts[i])
                           for i in range(len(tilts))])
        frames -= frames.mean(axis=(1, 2), keepdims=True)
        filtered = scipy.fft.irfft(
            scipy.fft.rfft(frames, axis=2, workers=-1) * self.ramp, n=frames.shape[2], axis=2,
            workers=-1).astype(np.float32)
        contributions = [geometry.back_project(filtered[i], tilts[i]) for i in range(len(tilts))]
        volume = np.sum(contributions, axis=0)
        step = np.zeros_like(shifts)
        scores = np.zeros(len(tilts))
        for i in range(len(tilts)):
            reference = geometry.project(volume - contributions[i], tilts[i])
            reference = (reference - reference.mean()) * self.window
            frame = frames[i] * self.window
            a, b = self._filter(reference), self._filter(frame)
            norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
            scores[i] = float((a * b).sum()) / norm if norm > 0 else 0.0
            displacement, _ = correlation_shift(reference, frame, max_step_px, self.weights)
            angle = np.radians(z_rot[i])
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            step[i] = rotation @ displacement
        return float(scores.mean()), scores, _without_translation(step, tilts, z_rot)


def held_out_score(stack, y_tilt_deg, z_rot_deg, shifts_px, thickness_px) -> float:
    """Mean leave-one-out correlation of each tilt with the re-projection of the others.

    Parameters
    ----------
    stack : array (T, Y, X)
        Tilt images (binned; shifts in its pixels).
    y_tilt_deg, z_rot_deg : arrays (T,)
    shifts_px : array (T, 2)
    thickness_px : float
        Slab of the reconstruction, px of ``stack``.
    """
    z_rot = np.broadcast_to(np.asarray(z_rot_deg, dtype=float), np.shape(y_tilt_deg))
    return HeldOutMatcher(stack, y_tilt_deg, thickness_px).evaluate(z_rot, np.asarray(shifts_px))[0]


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
    """Refine per-tilt shifts by projection matching; a round is kept only when it helps.

    Each round moves every tilt by its correlation peak with the leave-one-out re-projection
    (:class:`HeldOutMatcher`); the move is accepted only when the mean held-out score improves,
    else half of it is tried, else refinement stops. So the result never scores below the start.

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
        Largest number of rounds of reconstruct-compare-update.
    lowpass : float
        Low-pass of the filter and the correlation, fraction of Nyquist.
    max_step_px : float
        Largest correction per round.

    Returns
    -------
    shifts_px : array (T, 2) refined, and the RMS correction of each accepted round (px).
    """
    shifts, _, updates = guarded_rounds(
        HeldOutMatcher(stack, y_tilt_deg, thickness_px, lowpass),
        np.broadcast_to(np.asarray(z_rot_deg, dtype=float), np.shape(y_tilt_deg)),
        np.array(shifts_px, dtype=float, copy=True), rounds, max_step_px)
    return shifts, updates


def guarded_rounds(matcher: HeldOutMatcher, z_rot: np.ndarray, shifts: np.ndarray, rounds: int,
                   max_step_px: float = 4.0, judge: HeldOutMatcher | None = None
                   ) -> tuple[np.ndarray, float, list[float]]:
    """Projection-matching rounds, each accepted only when the held-out score improves.

    ``matcher`` proposes the corrections; ``judge`` (default: the same) scores them, so several
    slabs can propose while one measure decides. A rejected correction is tried at half its
    size, then refinement stops. Returns the shifts, their score (by ``judge``) and the RMS of
    each accepted correction (px)."""
    if judge is None or judge is matcher:
        judge = matcher
        score, _, step = matcher.evaluate(z_rot, shifts, max_step_px)
    else:
        score = judge.evaluate(z_rot, shifts, max_step_px)[0]
        step = matcher.evaluate(z_rot, shifts, max_step_px)[2]
    updates = []
    for _ in range(rounds):
        for fraction in (1.0, 0.5):
            trial = shifts + fraction * step
            trial_score, _, trial_step = judge.evaluate(z_rot, trial, max_step_px)
            if trial_score > score:
                break
        else:
            break
        if judge is not matcher:
            trial_step = matcher.evaluate(z_rot, trial, max_step_px)[2]
        updates.append(float(np.sqrt(np.mean(np.sum((trial - shifts) ** 2, axis=1)))))
        shifts, score, step = trial, trial_score, trial_step
    return shifts, score, updates


def search_axis(matcher: HeldOutMatcher, z_rot0: float, shifts: np.ndarray, *,
                range_deg: float = 4.0, step_deg: float = 1.0) -> tuple[float, float]:
    """Tilt-axis angle (one for the series) that maximises the held-out score.

    A grid of ``step_deg`` over ``z_rot0 ± range_deg``, then a parabola through the best point
    and its neighbours (kept within them). Returns the angle and its score.
    """
    n_tilts = len(matcher.tilts)
    offsets = np.arange(-range_deg, range_deg + 1e-9, step_deg)
    scores = np.array([matcher.evaluate(np.full(n_tilts, z_rot0 + o), shifts)[0]
                       for o in offsets])
    best = int(np.argmax(scores))
    angle = z_rot0 + offsets[best]
    if 0 < best < len(offsets) - 1:
        fraction = parabolic_offset(scores[best - 1], scores[best], scores[best + 1])
        angle += float(np.clip(fraction, -0.5, 0.5)) * step_deg
        score = matcher.evaluate(np.full(n_tilts, angle), shifts)[0]
        if score < scores[best]:
            angle, score = z_rot0 + offsets[best], float(scores[best])
        return float(angle), float(score)
    return float(angle), float(scores[best])


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
