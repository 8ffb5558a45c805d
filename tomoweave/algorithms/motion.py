"""Beam-induced motion correction of movie frames.

1. Global drift: every frame is cross-correlated against the sum of all the other frames as
   currently aligned (the running sum), B-factor weighted, on a Fourier-cropped grid that keeps the
   frequencies the B-factor leaves; shifts are applied as exact Fourier phase ramps and the loop
   repeats until no frame moves by more than ``tolerance_px``.
2. Local motion: the globally aligned frames are cut into overlapping patches, each patch is aligned
   the same way, and the residual patch trajectories are fitted by a smooth polynomial in x, y and
   time (MotionCor2's idea); the frames are then warped by that field.
3. Dose weighting by accumulated exposure (Grant & Grigorieff 2015), counting the pre-exposure of
   the tilt, and even/odd frame sums for noise2noise and half-set resolution later.

Drift convention: ``drift_px[i] = (dx, dy)`` means an object at pixel (x, y) of frame 0 appears at
(x + dx, y + dy) in frame i. ``drift_px[0] = (0, 0)``; the corrected sum is in frame 0's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms.preprocess import critical_exposure_e_a2
from tomoweave.algorithms.windows import cosine_taper, parabolic_offset

# Frames are tapered at their edges for the alignment only: content entering and leaving the
# field of view would otherwise correlate as a fixed edge.
_EDGE_TAPER = 0.15
_MAX_ALIGN_PX = 1024


@dataclass
class MotionResult:
    """Output of :func:`correct_motion`; images are float32 [y, x], drifts in pixels."""

    aligned_sum: np.ndarray
    even_sum: np.ndarray
    odd_sum: np.ndarray
    drift_px: np.ndarray
    local_rms_px: float = 0.0
    iterations: int = 0
    notes: list[str] = field(default_factory=list)


def correct_motion(
    frames: np.ndarray,
    pixel_size_a: float,
    dose_per_frame_e_a2: float = 0.0,
    pre_exposure_e_a2: float = 0.0,
    voltage_kv: float = 300.0,
    bfactor_px2: float = 100.0,
    patches: int = 0,
    patch_bfactor_px2: float = 50.0,
    max_shift_a: float = 1000.0,
    dose_weighting: bool = True,
    trajectory_degree: int = 3,
) -> MotionResult:
    """Align, dose-weight and sum the frames of one movie.

    Parameters
    ----------
    frames : ndarray [n, y, x]
        The movie, n >= 2 frames.
    pixel_size_a : float
        Pixel size of the frames, Å.
    dose_per_frame_e_a2, pre_exposure_e_a2 : float
        Exposure per frame and exposure received before the first frame, e/Å².
    bfactor_px2, patch_bfactor_px2 : float
        B-factors in px² (as in RELION and MotionCor2) damping high frequencies in the global /
        patch cross-correlations.
    patches : int
        Patches per side for local motion (0 or 1: global only).
    max_shift_a : float
        Largest drift of a frame against the running sum searched, Å.
    trajectory_degree : int
        Degree of the polynomial in time fitted to the global trajectory (0: no smoothing);
        beam-induced drift is smooth, the per-frame estimates are noisy.
    """
    frames = _check_frames(frames)
    if pixel_size_a <= 0:
        raise ValueError(f"pixel_size_a must be > 0, got {pixel_size_a}")
    drift, iterations = estimate_global_drift(frames, pixel_size_a, bfactor_px2, max_shift_a)
    drift = smooth_trajectory(drift, trajectory_degree)
    spectra = scipy.fft.rfft2(frames, workers=-1)
    for index in range(len(frames)):  # frame by frame: a 4k movie's ramps would not fit twice
        spectra[index] *= _phase_ramps(frames.shape[1:], -drift[index], spectra.shape[1:])[0]
    result_notes: list[str] = []
    local_rms = 0.0
    if patches >= 2:
        aligned = scipy.fft.irfft2(spectra, s=frames.shape[1:], workers=-1).astype(np.float32)
        fields, reason = estimate_local_motion(aligned, pixel_size_a, patches, patch_bfactor_px2)
        if fields is not None:
            local_rms = float(np.sqrt(np.mean(fields**2)))
            aligned = _warp_frames(aligned, fields)
            spectra = scipy.fft.rfft2(aligned, workers=-1)
        else:
            result_notes.append(f"{reason}: global correction only")
    exposures = pre_exposure_e_a2 + (np.arange(len(frames)) + 0.5) * dose_per_frame_e_a2
    use_weights = dose_weighting and dose_per_frame_e_a2 > 0
    sums = _weighted_sums(spectra, exposures, pixel_size_a, voltage_kv, use_weights,
                          frames.shape[1:])
    return MotionResult(sums[0], sums[1], sums[2], drift, local_rms, iterations, result_notes)


def smooth_trajectory(drift_px: np.ndarray, degree: int = 3) -> np.ndarray:
    """Least-squares polynomial (in frame index) of a trajectory (n, 2), kept at 0 for frame 0."""
    n = len(drift_px)
    if degree <= 0 or n <= degree + 1:
        return drift_px
    times = np.arange(n) / (n - 1)
    design = np.stack([times**power for power in range(1, degree + 1)], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, drift_px - drift_px[0], rcond=None)
    return design @ coefficients


def estimate_global_drift(
    frames: np.ndarray,
    pixel_size_a: float,
    bfactor_px2: float = 100.0,
    max_shift_a: float = 1000.0,
    max_iterations: int = 10,
    tolerance_px: float = 0.005,
) -> tuple[np.ndarray, int]:
    """Per-frame drift (n, 2) [(dx, dy)] in px relative to frame 0, and the iterations used."""
    frames = _check_frames(frames)
    shape = frames.shape[1:]
    crop = _crop_shape(shape, bfactor_px2)
    spectra = _cropped_spectra(frames, crop, _EDGE_TAPER)
    weights = _bfactor_weights(crop, shape, bfactor_px2)
    max_shift_px = max(2.0, max_shift_a / pixel_size_a)
    drift = np.zeros((len(frames), 2))
    scale = np.array([shape[1] / crop[1], shape[0] / crop[0]])
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported to the caller
        shifted = spectra * _phase_ramps(shape, -drift, spectra.shape[1:])
        total = shifted.sum(axis=0)
        update = np.zeros_like(drift)
        for index in range(len(frames)):
            reference = total - shifted[index]
            product = shifted[index] * np.conj(reference) * weights
            correlation = scipy.fft.irfft2(product, s=crop, workers=-1)
            update[index] = _peak_position(correlation, max_shift_px / scale) * scale
        drift += update
        drift -= drift[0]
        if np.max(np.abs(update)) < tolerance_px:
            break
    return drift, iterations


def estimate_local_motion(
    aligned: np.ndarray,
    pixel_size_a: float,
    patches: int,
    bfactor_px2: float = 50.0,
    time_degree: int = 3,
) -> tuple[np.ndarray | None, str]:
    """Residual motion field (n, 2, y, x) in px of globally aligned frames, and a note.

    Each patch (side = 2 × image / patches, so neighbours overlap by half) is aligned like a whole
    movie; the patch trajectories are fitted by a polynomial quadratic in x, y and of
    ``time_degree`` in the frame index, zero at frame 0. The field is None when the frames are
    too small for patches or when the fitted motion is not above three times its own noise
    (estimated from the scatter of the patch trajectories around the fit): warping by noise
    would only blur.
    """
    n, ny, nx = aligned.shape
    size_y, size_x = _even(min(ny, 2 * ny // patches)), _even(min(nx, 2 * nx // patches))
    if min(size_y, size_x) < 96:
        return None, "frames too small for patches"
    centres_y = np.linspace(size_y / 2, ny - size_y / 2, patches)
    centres_x = np.linspace(size_x / 2, nx - size_x / 2, patches)
    window = cosine_taper((size_y, size_x))
    rows, values = [], []
    for cy in centres_y:
        for cx in centres_x:
            y0, x0 = int(round(cy - size_y / 2)), int(round(cx - size_x / 2))
            patch = aligned[:, y0: y0 + size_y, x0: x0 + size_x]
            patch = (patch - patch.mean(axis=(1, 2), keepdims=True)) * window
            drift, _ = estimate_global_drift(patch, pixel_size_a, bfactor_px2,
                                             0.25 * size_x * pixel_size_a, max_iterations=5)
            rows.append(((cx - nx / 2) / nx, (cy - ny / 2) / ny))
            values.append(drift)
    return _fit_motion_field(np.array(rows), np.array(values), (n, ny, nx), time_degree)


def _fit_motion_field(centres, drifts, shape, time_degree):
    """Least-squares polynomial field from patch drifts (P, n, 2) at centres (P, 2) in [-.5, .5];
    (None, reason) when it is not significant."""
    n, ny, nx = shape
    times = np.arange(n) / max(1, n - 1)

    def design(x, y, t):
        spatial = [np.ones_like(x), x, y, x * x, x * y, y * y]
        return np.stack([s * t**power for power in range(1, time_degree + 1) for s in spatial], -1)

    px = np.repeat(centres[:, 0], n)
    py = np.repeat(centres[:, 1], n)
    pt = np.tile(times, len(centres))
    matrix = design(px, py, pt)
    observed = drifts.reshape(-1, 2)
    coefficients, *_ = np.linalg.lstsq(matrix, observed, rcond=None)
    fitted = matrix @ coefficients
    sigma = np.sqrt(np.mean((observed - fitted) ** 2))
    noise_floor = sigma * np.sqrt(matrix.shape[1] / max(1, matrix.shape[0] - matrix.shape[1]))
    signal = np.sqrt(np.mean(fitted**2))
    if signal < 3.0 * noise_floor or signal < 0.02:
        return None, f"local motion {signal:.3f} px not significant (noise {noise_floor:.3f} px)"
    grid_y, grid_x = np.meshgrid((np.arange(ny) - ny / 2) / ny, (np.arange(nx) - nx / 2) / nx,
                                 indexing="ij")
    fields = np.empty((n, 2, ny, nx), dtype=np.float32)
    for index, t in enumerate(times):
        basis = design(grid_x, grid_y, np.full_like(grid_x, t))
        fields[index, 0] = basis @ coefficients[:, 0]
        fields[index, 1] = basis @ coefficients[:, 1]
    return fields, f"local motion {signal:.3f} px"


def _warp_frames(aligned: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """Undo the residual motion: out_i(p) = frame_i(p + field_i(p)), cubic spline interpolation."""
    n, ny, nx = aligned.shape
    grid_y, grid_x = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32),
                                 indexing="ij")
    out = np.empty_like(aligned)
    for index in range(n):
        coords = np.stack([grid_y + fields[index, 1], grid_x + fields[index, 0]])
        out[index] = ndimage.map_coordinates(aligned[index], coords, order=3, mode="reflect")
    return out


def _weighted_sums(spectra, exposures, pixel_size_a, voltage_kv, use_weights, shape):
    """Dose-weighted sums of all, even and odd frames (float32 images), one pass over frames.

    Each sum is scaled per frequency so its noise power equals that of the plain sum of the
    same frames; without weights the sums are plain.
    """
    n = len(spectra)
    groups = (np.arange(n), np.arange(0, n, 2), np.arange(1, n, 2))
    totals = [np.zeros(spectra.shape[1:], dtype=np.complex64) for _ in groups]
    norms = [np.zeros(spectra.shape[1:], dtype=np.float32) for _ in groups]
    unit = np.ones(spectra.shape[1:], dtype=np.float32)
    if use_weights:
        fy = np.fft.fftfreq(shape[0], d=pixel_size_a)[:, None]
        fx = np.fft.rfftfreq(shape[1], d=pixel_size_a)[None, :]
        half_inverse = (-0.5 / critical_exposure_e_a2(np.sqrt(fx * fx + fy * fy), voltage_kv))
        half_inverse = half_inverse.astype(np.float32)
    for index in range(n):
        if use_weights:
            weight = np.exp(half_inverse * np.float32(exposures[index]))
            weight[0, 0] = 1.0
        else:
            weight = unit
        weighted = spectra[index] * weight
        for total, norm, members in zip(totals, norms, groups, strict=True):
            if index in members:
                total += weighted
                norm += weight * weight
    images = []
    for total, norm, members in zip(totals, norms, groups, strict=True):
        if len(members) == 0:
            images.append(np.zeros(shape, dtype=np.float32))
            continue
        if use_weights:
            total *= np.sqrt(len(members) / np.maximum(norm, 1e-12))
        images.append(scipy.fft.irfft2(total, s=shape, workers=-1).astype(np.float32))
    return images


def shift_image(image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Translate ``image`` [y, x] by (dx, dy) px with a Fourier phase ramp (periodic)."""
    spectrum = scipy.fft.rfft2(np.asarray(image, dtype=np.float32), workers=-1)
    spectrum *= _phase_ramps(image.shape, np.array([shift_px]), spectrum.shape)[0]
    return scipy.fft.irfft2(spectrum, s=image.shape, workers=-1).astype(np.float32)


def _phase_ramps(full_shape, shifts_px, grid_shape):
    """exp(-2πi k·s) for each shift (n, 2) on a (possibly cropped) rfft grid of ``full_shape``.

    Built as outer products of 1D ramps (the exponential is separable), which is far cheaper
    than evaluating it on every frequency of a 4k grid.
    """
    rows, cols = grid_shape
    ky = np.fft.fftfreq(rows, d=1.0) * rows / full_shape[0]
    kx = np.arange(cols) / full_shape[1]
    shifts_px = np.atleast_2d(shifts_px)
    ramp_x = np.exp(-2j * np.pi * kx[None, :] * shifts_px[:, 0, None]).astype(np.complex64)
    ramp_y = np.exp(-2j * np.pi * ky[None, :] * shifts_px[:, 1, None]).astype(np.complex64)
    return ramp_y[:, :, None] * ramp_x[:, None, :]


def _crop_shape(shape, bfactor_px2, max_size_px=_MAX_ALIGN_PX):
    """Smallest even grid holding the frequencies where the B-factor weight is above 1e-3,
    at most ``max_size_px`` on a side (4k frames are aligned on a 1k grid: the shifts are still
    sub-pixel exact because they are applied as phase ramps and re-measured near zero)."""
    k_max_px = 0.5 if bfactor_px2 <= 0 else min(0.5, np.sqrt(4.0 * np.log(1e3) / bfactor_px2))
    k_max_px = min(k_max_px, 0.5 * max_size_px / max(shape))
    if k_max_px >= 0.5:
        return shape
    return tuple(max(32, _even(int(np.ceil(2 * k_max_px * size)))) for size in shape)


def _cropped_spectra(frames, crop, taper=0.0):
    centred = frames - frames.mean(axis=(1, 2), keepdims=True)
    if taper > 0:
        centred = centred * cosine_taper(frames.shape[1:], taper)
    spectra = scipy.fft.rfft2(centred, workers=-1)
    ny = frames.shape[1]
    if crop == frames.shape[1:]:
        return spectra.astype(np.complex64)
    half = crop[0] // 2
    rows = np.concatenate([np.arange(half), np.arange(ny - half, ny)])
    return spectra[:, rows, : crop[1] // 2 + 1].astype(np.complex64)


def _bfactor_weights(crop, shape, bfactor_px2):
    ky = np.fft.fftfreq(crop[0], d=1.0) * crop[0] / shape[0]
    kx = np.arange(crop[1] // 2 + 1) / shape[1]
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    return np.exp(-bfactor_px2 * k2 / 4.0).astype(np.float32)


def _peak_position(correlation: np.ndarray, max_shift_px: np.ndarray) -> np.ndarray:
    """Sub-pixel (dx, dy) of the correlation maximum within ±max_shift_px (periodic grid)."""
    ny, nx = correlation.shape
    dy = np.fft.fftfreq(ny, d=1.0 / ny)
    dx = np.fft.fftfreq(nx, d=1.0 / nx)
    allowed = (np.abs(dy)[:, None] <= max_shift_px[1]) & (np.abs(dx)[None, :] <= max_shift_px[0])
    masked = np.where(allowed, correlation, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(masked)), correlation.shape)
    offset_y = parabolic_offset(correlation[(iy - 1) % ny, ix], correlation[iy, ix],
                          correlation[(iy + 1) % ny, ix])
    offset_x = parabolic_offset(correlation[iy, (ix - 1) % nx], correlation[iy, ix],
                          correlation[iy, (ix + 1) % nx])
    return np.array([dx[ix] + offset_x, dy[iy] + offset_y])


def _even(value: int) -> int:
    return int(value) - int(value) % 2


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ValueError(f"expected a movie [n >= 2, y, x], got shape {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError("movie contains NaN or infinite values")
    return frames.astype(np.float32, copy=False)
