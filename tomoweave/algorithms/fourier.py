"""Fourier-space building blocks shared by picking, extraction, averaging and post-processing.

Frequencies are in cycles per pixel inside this module; the interface takes pixel sizes and
resolutions in Å. Weights are float32 on the ``rfftn`` grid of a volume ([z, y, x//2+1]) unless
a function says it returns the full, centred grid (index N // 2 is the zero frequency).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from tomoweave.algorithms.ctf_model import ctf_at_frequencies
from tomoweave.algorithms.preprocess import critical_exposure_e_a2


def rfft_frequencies(shape_zyx: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Frequency components (kz, ky, kx) in cycles/pixel on the rfftn grid, broadcastable."""
    kz = np.fft.fftfreq(shape_zyx[0])[:, None, None]
    ky = np.fft.fftfreq(shape_zyx[1])[None, :, None]
    kx = np.fft.rfftfreq(shape_zyx[2])[None, None, :]
    return kz, ky, kx


def wedge_mask(shape_zyx: tuple[int, int, int], tilt_min_deg: float,
               tilt_max_deg: float) -> np.ndarray:
    """Binary missing-wedge mask on the rfftn grid for single-axis tilt about Y.

    A projection at tilt ``t`` (specimen rotated by Ry(t)) samples the Fourier plane
    ``kz = tan(t) kx``; a frequency is kept when its angle ``atan(kz / kx)`` lies in the range.
    """
    if not -90 <= tilt_min_deg < tilt_max_deg <= 90:
        raise ValueError(f"tilt range {tilt_min_deg}…{tilt_max_deg}°: expected -90 ≤ min < max ≤ 90")
    kz, _, kx = rfft_frequencies(shape_zyx)
    angle = np.degrees(np.arctan2(kz, kx))  # kx >= 0 on the half grid: angle in [-90, 90]
    keep = (angle >= tilt_min_deg - 1e-6) & (angle <= tilt_max_deg + 1e-6)
    keep = keep | ((kz == 0) & (kx == 0))
    return np.broadcast_to(keep, (shape_zyx[0], shape_zyx[1], shape_zyx[2] // 2 + 1)).astype(
        np.float32)


def radial_ctf(shape_zyx: tuple[int, int, int], pixel_size_a: float, defocus_a: float,
               voltage_kv: float = 300.0, spherical_aberration_mm: float = 2.7,
               amplitude_contrast: float = 0.07) -> np.ndarray:
    """Isotropic CTF (sign included) on the rfftn grid of a volume, float32."""
    kz, ky, kx = rfft_frequencies(shape_zyx)
    radius_inv_a = np.sqrt(kz**2 + ky**2 + kx**2) / pixel_size_a
    ctf = ctf_at_frequencies(radius_inv_a, np.zeros_like(radius_inv_a), defocus_a, defocus_a,
                             0.0, voltage_kv, spherical_aberration_mm, amplitude_contrast)
    return ctf.astype(np.float32)


def lowpass_filter(shape_zyx: tuple[int, int, int], pixel_size_a: float,
                   resolution_a: float | None, edge_width: float = 0.02) -> np.ndarray:
    """Raised-cosine low-pass at ``resolution_a`` on the rfftn grid (ones if None)."""
    kz, ky, kx = rfft_frequencies(shape_zyx)
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    if resolution_a is None:
        return np.ones(radius.shape, dtype=np.float32)
    cutoff = min(0.5, pixel_size_a / float(resolution_a))
    ramp = np.clip((radius - cutoff) / edge_width + 0.5, 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * ramp))).astype(np.float32)


def wedge_ctf_weight(box_px: int, pixel_size_a: float, tilt_range_deg: tuple[float, float] | None,
                    lowpass_a: float | None = None, ctf: dict | None = None) -> np.ndarray:
    """Fourier weight of a box: low-pass × missing wedge × CTF (signed), on the rfftn grid.

    ``ctf`` holds ``defocus_a`` (and optionally ``voltage_kv``, ``spherical_aberration_mm``,
    ``amplitude_contrast``, ``phase_flipped``); a phase-flipped tomogram gets ``-|CTF|``.
    """
    shape = (box_px, box_px, box_px)
    weight = lowpass_filter(shape, pixel_size_a, lowpass_a)
    if tilt_range_deg is not None:
        weight *= wedge_mask(shape, *tilt_range_deg)
    if ctf is not None:
        options = {k: v for k, v in ctf.items() if k != "phase_flipped"}
        values = radial_ctf(shape, pixel_size_a, **options)
        weight *= -np.abs(values) if ctf.get("phase_flipped") else values
    return weight


def fourier_crop(volume: np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    """Downsample a volume to ``size`` (int: a cube) by cropping its spectrum.

    Index N // 2 stays the centre on every axis, so positions in Å from the centre keep their
    meaning: this is Fourier binning of a box or of a whole tomogram.
    """
    shape = (size,) * volume.ndim if isinstance(size, int | np.integer) else tuple(size)
    if shape == volume.shape:
        return volume.astype(np.float32)
    if any(n > m for n, m in zip(shape, volume.shape, strict=True)):
        raise ValueError(f"fourier_crop: cannot enlarge {volume.shape} to {shape}")
    spectrum = scipy.fft.fftshift(scipy.fft.fftn(volume, workers=-1))
    region = tuple(slice(m // 2 - n // 2, m // 2 - n // 2 + n)
                   for n, m in zip(shape, volume.shape, strict=True))
    out = scipy.fft.ifftn(scipy.fft.ifftshift(spectrum[region]), workers=-1).real
    return (out * (np.prod(shape) / np.prod(volume.shape))).astype(np.float32)


def full_grid_from_rfft(half: np.ndarray, box_px: int) -> np.ndarray:
    """Full Hermitian-symmetric grid (box³, not shifted) from a real weight on the rfft half."""
    full = np.empty((box_px,) * 3, dtype=np.float32)
    n_half = half.shape[2]
    full[:, :, :n_half] = half
    kx = np.arange(n_half, box_px)
    mirror = (-kx) % box_px
    index = (-np.arange(box_px)) % box_px
    full[:, :, n_half:] = half[index][:, index][:, :, mirror]
    return full


def centred_grid_from_rfft(half: np.ndarray, box_px: int) -> np.ndarray:
    """Full grid with the zero frequency at index box // 2 (as RELION 3.1 writes 3D CTFs) from
    a real weight on the rfft half grid (box, box, box // 2 + 1)."""
    return np.fft.fftshift(full_grid_from_rfft(half, box_px)).astype(np.float32)


def rfft_from_centred_grid(centred: np.ndarray) -> np.ndarray:
    """The rfft half grid (box, box, box // 2 + 1) of a real weight whose zero frequency is at
    index box // 2 on every axis (the inverse of :func:`centred_grid_from_rfft`)."""
    box_px = centred.shape[-1]
    if centred.shape[-3:] != (box_px,) * 3:
        raise ValueError(f"expected a cubic weight volume, got shape {centred.shape}")
    unshifted = np.fft.ifftshift(np.asarray(centred, dtype=np.float32), axes=(-3, -2, -1))
    return np.ascontiguousarray(unshifted[..., : box_px // 2 + 1])


def centred_frequencies_2d(box_px: int, pixel_size_a: float) -> tuple[np.ndarray, np.ndarray]:
    """(fx, fy) in 1/Å on the full 2D grid of a box whose zero frequency is at index box // 2."""
    axis = (np.arange(box_px) - box_px // 2) / (box_px * pixel_size_a)
    return axis[None, :], axis[:, None]


def tilt_transfers(box_px: int, pixel_size_a: float, ctf: dict, exposure_e_a2: np.ndarray | None,
                   *, exposure_power: float = 1.0) -> np.ndarray:
    """Transfer h_t = CTF_t × exposure envelope_t of every tilt on its central slice.

    One function serves the 3D CTF model of plain subtomograms and the insertion of
    pseudo-subtomograms: the observed slice of tilt t is X_t = h_t S + noise.

    Parameters
    ----------
    box_px, pixel_size_a : int, float
        The slice grid: box_px² at pixel_size_a Å, zero frequency at index box_px // 2.
    ctf : dict
        Per tilt (arrays of T): ``defocus_u_a``, ``defocus_v_a`` (at the particle, underfocus
        positive, Å), ``astigmatism_angle_deg`` (of U from the image X axis); optional
        ``phase_shift_deg``; scalars ``voltage_kv``, ``spherical_aberration_mm``,
        ``amplitude_contrast``; ``phase_flipped`` True gives ``-|CTF|`` (images that were
        phase-flipped keep dense objects dark).
    exposure_e_a2 : (T,) or None
        Exposure of each tilt at the middle of its acquisition, e/Å² (None: no damping).
    exposure_power : float
        1 for images as recorded (radiation damage damps the amplitudes once); 2 for images
        that were also dose-filtered.

    Returns
    -------
    (T, box_px, box_px) float32, [t, fy, fx].
    """
    fx, fy = centred_frequencies_2d(box_px, pixel_size_a)
    defocus_u = np.atleast_1d(np.asarray(ctf["defocus_u_a"], dtype=float))
    count = len(defocus_u)
    phases = np.broadcast_to(np.asarray(ctf.get("phase_shift_deg", 0.0), dtype=float), (count,))
    angles = np.broadcast_to(np.asarray(ctf.get("astigmatism_angle_deg", 0.0), dtype=float),
                             (count,))
    defocus_v = np.broadcast_to(np.asarray(ctf.get("defocus_v_a", defocus_u), dtype=float),
                                (count,))
    voltage_kv = float(ctf.get("voltage_kv", 300.0))
    envelope_rate = None
    if exposure_e_a2 is not None:
        frequency = np.sqrt(fx * fx + fy * fy)
        envelope_rate = exposure_power / (2.0 * critical_exposure_e_a2(frequency, voltage_kv))
        envelope_rate[box_px // 2, box_px // 2] = 0.0  # keep the mean
    out = np.empty((count, box_px, box_px), dtype=np.float32)
    for t in range(count):
        values = ctf_at_frequencies(fx, fy, defocus_u[t], defocus_v[t], angles[t], voltage_kv,
                                    float(ctf.get("spherical_aberration_mm", 2.7)),
                                    float(ctf.get("amplitude_contrast", 0.07)), phases[t])
        if ctf.get("phase_flipped"):
            values = -np.abs(values)
        if envelope_rate is not None:
            values = values * np.exp(-float(exposure_e_a2[t]) * envelope_rate)
        out[t] = values
    return out
