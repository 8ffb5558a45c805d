"""Image formation: phase from the projected potential, CTF per height, dose damping, noise.

Model per tilt (weak-phase object, exponentiated so intensities stay positive for gold):

    phase(x)     = sigma(V) · ∫ excess potential dz           (rad; per height slab s)
    contrast(x)  = Σ_s F⁻¹[ CTF(defocus_tilt + z_s) · D(k, dose) · F[phase_s] ]
    intensity(x) = exp(−path_ice / λ_inelastic) · exp(2 · contrast(x))
    counts(x)    = Poisson(dose_per_tilt · pixel_size² · intensity(x))

``CTF`` is tomoweave.algorithms.ctf_model's −sin(χ) (underfocus positive), so dense objects are
dark. ``z_s`` is the height of slab s along the beam (third row of the projection matrix, Å,
+z towards the source) and defocus grows with it: defocus(point) = defocus_tilt + z. This gives
the defocus gradient across a tilted image. ``D`` is Grant & Grigorieff's (2015) exposure
damping at the dose received half-way through the tilt's exposure, with the critical exposure
(and its voltage scaling) of the dose filter, ``algorithms.preprocess.critical_exposure_e_a2``.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from tomoweave.algorithms.ctf_model import (
    ctf_at_frequencies,
    electron_wavelength_a,
    frequency_grid_2d,
)
from tomoweave.algorithms.preprocess import critical_exposure_e_a2

ELECTRON_REST_ENERGY_KEV = 510.99895


def interaction_constant_rad_per_v_a(voltage_kv: float) -> float:
    """Phase shift per volt·Å of projected potential (relativistic), rad/(V·Å)."""
    wavelength_a = electron_wavelength_a(voltage_kv)
    energy = voltage_kv
    return float(2 * np.pi / (wavelength_a * voltage_kv * 1e3)
                 * (ELECTRON_REST_ENERGY_KEV + energy) / (2 * ELECTRON_REST_ENERGY_KEV + energy))


def auto_slab_a(pixel_size_a: float, voltage_kv: float, phase_tolerance_rad: float = 0.01,
                max_slab_a: float = 200.0, min_slab_a: float = 20.0) -> float:
    """Height step for the per-height CTF: a point half a step from its slab's centre sees a CTF
    phase error of at most ``phase_tolerance_rad`` at Nyquist (chi error = π λ δz k²)."""
    nyquist_inv_a = 0.5 / pixel_size_a
    step_a = 2 * phase_tolerance_rad / (np.pi * electron_wavelength_a(voltage_kv) * nyquist_inv_a**2)
    return float(np.clip(step_a, min_slab_a, max_slab_a))


def padded_shape(shape_yx: tuple[int, int], pad_px: int) -> tuple[int, int]:
    return tuple(fft.next_fast_len(n + 2 * pad_px) for n in shape_yx)


def contrast_image(slabs_v_a: np.ndarray, heights_a: np.ndarray, pixel_size_a: float,
                   ctf: dict, exposure_e_a2: float | None, pad_px: int,
                   ctf_on: bool = True) -> np.ndarray:
    """Contrast on a padded grid (ny + 2·pad, nx + 2·pad, rounded up to fast FFT sizes).

    ``ctf`` holds defocus_u_a, defocus_v_a, astigmatism_angle_deg, voltage_kv,
    spherical_aberration_mm, amplitude_contrast. ``exposure_e_a2`` None disables damping.
    """
    n_slabs, ny, nx = slabs_v_a.shape
    shape = padded_shape((ny, nx), pad_px)
    sigma = interaction_constant_rad_per_v_a(ctf["voltage_kv"])
    spectrum_total = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    padded = np.zeros(shape, dtype=np.float32)
    fy, fx = frequency_grid_2d(shape, pixel_size_a, rfft=True)
    ctfs = _ctf_by_height(fx, fy, ctf, heights_a) if ctf_on else None
    for slab in slabs_v_a:
        ctf_here = next(ctfs) if ctfs is not None else None
        if not slab.any():
            continue
        padded[pad_px:pad_px + ny, pad_px:pad_px + nx] = slab * sigma
        spectrum = fft.rfft2(padded, workers=-1)
        if ctf_here is not None:
            spectrum *= ctf_here
        spectrum_total += spectrum
    if exposure_e_a2 is not None and exposure_e_a2 > 0:
        frequency = np.sqrt(fx * fx + fy * fy)
        critical = critical_exposure_e_a2(frequency, ctf["voltage_kv"])  # the dose filter's own
        spectrum_total *= np.exp(-exposure_e_a2 / (2 * critical))
    if not ctf_on:  # without a CTF, show density dark as a microscope in underfocus would
        spectrum_total *= -1
    return fft.irfft2(spectrum_total, shape, workers=-1).astype(np.float32)


def _ctf_by_height(fx: np.ndarray, fy: np.ndarray, ctf: dict, heights_a: np.ndarray):
    """The CTF at each (evenly spaced) height, one array per height, via a phase recurrence.

    With chi(h) = chi(0) + π λ h k², −sin(chi(h)) = C₀ cos(π λ h k²) + C₉₀ sin(π λ h k²), where
    C₀ and C₉₀ are ctf_model's CTF at the tilt's defocus with 0° and 90° extra phase. The factor
    exp(i π λ h k²) advances by one constant complex multiplication per height step.
    """
    common = (ctf["astigmatism_angle_deg"], ctf["voltage_kv"], ctf["spherical_aberration_mm"],
              ctf["amplitude_contrast"])
    base = ctf_at_frequencies(fx, fy, ctf["defocus_u_a"], ctf["defocus_v_a"], *common)
    quadrature = ctf_at_frequencies(fx, fy, ctf["defocus_u_a"], ctf["defocus_v_a"], *common,
                                    phase_shift_deg=90.0)
    scale = np.pi * electron_wavelength_a(ctf["voltage_kv"]) * (fx * fx + fy * fy)
    heights_a = np.asarray(heights_a, dtype=float)
    step_a = heights_a[1] - heights_a[0] if len(heights_a) > 1 else 0.0
    if len(heights_a) > 2 and not np.allclose(np.diff(heights_a), step_a):
        raise ValueError("heights must be evenly spaced")
    phase = np.exp(1j * scale * heights_a[0]) if len(heights_a) else None
    advance = np.exp(1j * scale * step_a)
    for _ in heights_a:
        yield (base * phase.real + quadrature * phase.imag).astype(np.float32)
        phase = phase * advance


def expected_counts(contrast: np.ndarray, ice_path_a: float, mean_free_path_a: float,
                    dose_e_a2: float, pixel_size_a: float) -> np.ndarray:
    """Noise-free electron counts per pixel."""
    mean = np.exp(-ice_path_a / mean_free_path_a)
    return (dose_e_a2 * pixel_size_a**2 * mean * np.exp(2.0 * contrast)).astype(np.float32)


def crop(padded: np.ndarray, pad_px: int, shape_yx: tuple[int, int]) -> np.ndarray:
    return padded[..., pad_px:pad_px + shape_yx[0], pad_px:pad_px + shape_yx[1]]


def fourier_shift(image: np.ndarray, shift_xy_px: tuple[float, float]) -> np.ndarray:
    """Shift an image by (dx, dy) pixels (content moves to +x, +y), periodic."""
    fy, fx = frequency_grid_2d(image.shape, 1.0, rfft=True)
    phase = np.exp(-2j * np.pi * (fx * shift_xy_px[0] + fy * shift_xy_px[1]))
    spectrum = fft.rfft2(image, workers=-1) * phase
    return fft.irfft2(spectrum, image.shape, workers=-1).astype(np.float32)


def drift_trajectory_px(n_frames: int, total_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth drift path (n_frames, 2) in px starting at (0, 0): fast first, then slowing down."""
    if n_frames == 1 or total_px == 0:
        return np.zeros((n_frames, 2))
    direction = rng.uniform(0, 2 * np.pi)
    bend = rng.uniform(-0.6, 0.6)
    progress = 1.0 - np.exp(-3.0 * np.arange(n_frames) / (n_frames - 1))
    progress /= progress[-1]
    angle = direction + bend * progress
    steps = np.diff(progress, prepend=0.0)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return np.cumsum(steps, axis=0) * total_px


def movie_frames(expected_padded: np.ndarray, pad_px: int, shape_yx: tuple[int, int],
                 drift_px: np.ndarray, noise_on: bool, rng: np.random.Generator) -> np.ndarray:
    """Frames (n, ny, nx): frame j sees the tilt's signal shifted by drift_px[j], with 1/n of
    its dose and its own Poisson noise."""
    n_frames = len(drift_px)
    frames = np.empty((n_frames, *shape_yx), dtype=np.float32)
    for index, shift in enumerate(drift_px):
        signal = crop(fourier_shift(expected_padded / n_frames, tuple(shift)), pad_px, shape_yx)
        signal = np.clip(signal, 0.0, None)
        frames[index] = rng.poisson(signal).astype(np.float32) if noise_on else signal
    return frames


def align_and_sum_frames(frames: np.ndarray, drift_px: np.ndarray, pad_px: int) -> np.ndarray:
    """Sum of frames moved back by their drift (the perfectly motion-corrected tilt image).

    Frames are padded with their mean before shifting so edges do not wrap around.
    """
    n_frames, ny, nx = frames.shape
    total = np.zeros((ny, nx), dtype=np.float64)
    for frame, shift in zip(frames, drift_px, strict=True):
        padded = np.pad(frame, pad_px, mode="constant", constant_values=float(frame.mean()))
        back = fourier_shift(padded, (-shift[0], -shift[1]))
        total += back[pad_px:pad_px + ny, pad_px:pad_px + nx]
    return total.astype(np.float32)


def add_xrays(images: np.ndarray, count: int, strength: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Add ``count`` single-pixel hits of ``strength`` × the mean to random images of a stack
    (n, ny, nx) in place. Returns (image index, (x, y)) of each hit."""
    n_images, ny, nx = images.shape
    which = rng.integers(0, n_images, size=count)
    xy = np.stack([rng.integers(0, nx, size=count), rng.integers(0, ny, size=count)], axis=1)
    for image, (x, y) in zip(which, xy, strict=True):
        images[image, y, x] += strength * float(images[image].mean())
    return which, xy
