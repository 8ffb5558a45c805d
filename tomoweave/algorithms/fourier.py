"""Fourier-space building blocks shared by picking, extraction, averaging and post-processing.

Frequencies are in cycles per pixel inside this module; the interface takes pixel sizes and
resolutions in Å. Weights are float32 on the ``rfftn`` grid of a volume ([z, y, x//2+1]) unless
a function says it returns the full, centred grid (index N // 2 is the zero frequency).
"""

from __future__ import annotations

from collections.abc import Callable

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


def wedge_taper(shape_zyx: tuple[int, int, int], tilt_min_deg: float, tilt_max_deg: float,
                taper_deg: float = 5.0, taper_px: float = 2.0) -> np.ndarray:
    """Soft missing-wedge weight, [kz, 1, kx] on the rfftn grid (broadcasts over ky), float32.

    1 inside the tilt range (as :func:`wedge_mask`), falling to 0 (raised cosine) with the
    distance beyond the wedge's edge: over ``taper_deg`` of angle, and never over fewer than
    ``taper_px`` grid steps (at low frequency the grid is coarse in angle). A soft edge keeps
    the filter's kernel short, so filtering a tile of a volume gives nearly what filtering the
    whole volume gives, whatever padding the tile has.
    """
    if not -90 <= tilt_min_deg < tilt_max_deg <= 90:
        raise ValueError(f"tilt range {tilt_min_deg}…{tilt_max_deg}°: expected -90 ≤ min < max ≤ 90")
    kz, _, kx = rfft_frequencies(shape_zyx)
    angle = np.arctan2(kz, kx)
    excess = np.maximum(angle - np.radians(tilt_max_deg), np.radians(tilt_min_deg) - angle)
    radius = np.hypot(kz, kx)
    distance = radius * np.sin(np.clip(excess, 0.0, np.pi / 2))  # cycles/pixel from the edge
    width = np.maximum(radius * np.sin(np.radians(taper_deg)), taper_px / max(shape_zyx))
    ramp = np.clip(distance / width, 0.0, 1.0)
    ramp = np.where(excess > np.pi / 2, 1.0, ramp)
    weight = 0.5 * (1 + np.cos(np.pi * ramp))
    weight[0, 0, 0] = 1.0
    return weight.astype(np.float32)


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


# ----------------------------------------------------------------------------- Fourier shells
def shell_indices(box_px: int) -> np.ndarray:
    """Fourier shell of every voxel of a cubic box's rfftn grid: round(|k| · box), int32.

    Shell ``s`` holds the frequencies nearest ``s / (box · pixel size)``; shells 0 … box // 2
    are complete spheres, higher ones only the corners.
    """
    kz, ky, kx = rfft_frequencies((box_px,) * 3)
    return np.rint(np.sqrt(kz**2 + ky**2 + kx**2) * box_px).astype(np.int32)


def rfft_multiplicity(box_px: int) -> np.ndarray:
    """How often each voxel of the rfftn half grid stands in the full grid (1 or 2), float32.

    Sums over the full (Hermitian) spectrum equal sums over the half grid weighted by this: the
    planes kx = 0 and kx = box / 2 (even boxes) hold their own mirror images, the others count
    for themselves and their conjugates.
    """
    n_half = box_px // 2 + 1
    counts = np.full(n_half, 2.0, dtype=np.float32)
    counts[0] = 1.0
    if box_px % 2 == 0:
        counts[-1] = 1.0
    return np.broadcast_to(counts, (box_px, box_px, n_half))


def shell_frequencies_inv_a(box_px: int, pixel_size_a: float) -> np.ndarray:
    """Spatial frequency of shells 0 … box // 2 in 1/Å."""
    return np.arange(box_px // 2 + 1) / (box_px * float(pixel_size_a))


def shell_sums(values: np.ndarray, box_px: int) -> np.ndarray:
    """Sum over each complete shell 0 … box // 2 of a real rfftn-grid array, full-grid weighted.

    ``values`` has shape (..., box, box, box // 2 + 1); the result (..., box // 2 + 1).
    """
    values = np.asarray(values)
    lead = values.shape[:-3]
    matrix = _shell_matrix(box_px)
    flat = values.reshape(-1, matrix.shape[0]).astype(np.float64, copy=False)
    return np.asarray(matrix.T @ flat.T).T.reshape(*lead, matrix.shape[1])


_SHELL_MATRICES: dict[int, object] = {}


def _shell_matrix(box_px: int):
    """Sparse (voxels × shells) matrix: rfft multiplicity where a voxel lies in a shell."""
    import scipy.sparse

    if box_px in _SHELL_MATRICES:
        return _SHELL_MATRICES[box_px]
    shells = shell_indices(box_px).ravel()
    weights = rfft_multiplicity(box_px).ravel()
    n_shells = box_px // 2 + 1
    keep = np.flatnonzero(shells < n_shells)
    matrix = scipy.sparse.csr_matrix((weights[keep], (keep, shells[keep])),
                                     shape=(shells.size, n_shells))
    _SHELL_MATRICES[box_px] = matrix
    return matrix


def shell_average(values: np.ndarray, box_px: int) -> np.ndarray:
    """Mean over each shell 0 … box // 2 of a real rfftn-grid array (..., box // 2 + 1)."""
    counts = shell_sums(np.ones((box_px, box_px, box_px // 2 + 1), np.float32), box_px)
    return shell_sums(values, box_px) / np.maximum(counts, 1.0)


def shell_filter(per_shell: np.ndarray, box_px: int) -> np.ndarray:
    """A radial filter on the rfftn grid from one value per shell (linear between shells).

    Frequencies beyond shell box // 2 (the corners) take the last shell's value.
    """
    kz, ky, kx = rfft_frequencies((box_px,) * 3)
    radius = np.sqrt(kz**2 + ky**2 + kx**2) * box_px
    values = np.asarray(per_shell, dtype=float)
    return np.interp(radius, np.arange(len(values)), values).astype(np.float32)


def fourier_shell_correlation(volume_a: np.ndarray, volume_b: np.ndarray,
                              mask: np.ndarray | None = None) -> np.ndarray:
    """FSC of two cubic maps (optionally both multiplied by ``mask``) in shells 0 … box // 2.

    Returns float64, one value per shell; shell 0 is the correlation of the means.
    """
    if volume_a.shape != volume_b.shape or len(set(volume_a.shape)) != 1:
        raise ValueError(f"FSC needs two cubic maps of one size, got {volume_a.shape} and "
                         f"{volume_b.shape}")
    if mask is not None:
        volume_a, volume_b = volume_a * mask, volume_b * mask
    box = volume_a.shape[0]
    fa = scipy.fft.rfftn(np.asarray(volume_a, np.float32), workers=-1)
    fb = scipy.fft.rfftn(np.asarray(volume_b, np.float32), workers=-1)
    return fsc_of_spectra(fa, fb, box)


def fsc_of_spectra(spectrum_a: np.ndarray, spectrum_b: np.ndarray, box_px: int) -> np.ndarray:
    """FSC of two rfftn spectra of a cubic box, shells 0 … box // 2 (float64)."""
    cross = shell_sums((spectrum_a * np.conj(spectrum_b)).real, box_px)
    power_a = shell_sums(np.abs(spectrum_a) ** 2, box_px)
    power_b = shell_sums(np.abs(spectrum_b) ** 2, box_px)
    denominator = np.sqrt(power_a * power_b)
    return np.where(denominator > 0, cross / np.maximum(denominator, 1e-300), 0.0)


def resolution_at_threshold(fsc: np.ndarray, box_px: int, pixel_size_a: float,
                            threshold: float = 0.143) -> float:
    """Resolution (Å) where the FSC first falls below ``threshold`` (linear between shells).

    The search starts at shell 1; an FSC that never falls below gives Nyquist (2 × pixel).
    """
    values = np.asarray(fsc, dtype=float)
    frequencies = shell_frequencies_inv_a(box_px, pixel_size_a)
    for shell in range(1, len(values)):
        if values[shell] < threshold:
            f0, f1 = frequencies[shell - 1], frequencies[shell]
            v0, v1 = values[shell - 1], values[shell]
            fraction = (v0 - threshold) / (v0 - v1) if v0 > v1 else 0.0
            crossing = f0 + fraction * (f1 - f0)
            return float(1.0 / crossing) if crossing > 0 else float("inf")
    return 2.0 * float(pixel_size_a)


def phase_randomise(volume: np.ndarray, pixel_size_a: float, beyond_resolution_a: float,
                    rng: np.random.Generator | int = 0) -> np.ndarray:
    """The map with random phases at frequencies beyond ``beyond_resolution_a``, amplitudes kept.

    The random phases are those of real white noise, so the result is real. Used for the
    mask correction of the FSC (Chen et al. 2013) and to make two half references independent
    beyond a resolution.
    """
    rng = np.random.default_rng(rng)
    spectrum = scipy.fft.rfftn(np.asarray(volume, np.float32), workers=-1)
    noise = scipy.fft.rfftn(rng.standard_normal(volume.shape).astype(np.float32), workers=-1)
    kz, ky, kx = rfft_frequencies(volume.shape)
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    beyond = radius > float(pixel_size_a) / float(beyond_resolution_a)
    phases = noise / np.maximum(np.abs(noise), 1e-30)
    spectrum = np.where(beyond, np.abs(spectrum) * phases, spectrum)
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)


def mask_corrected_fsc(fsc_masked: np.ndarray, fsc_randomised: np.ndarray,
                       randomised_from_shell: int) -> np.ndarray:
    """Chen et al. (2013): FSC_true = (FSC_t - FSC_n) / (1 - FSC_n) from the randomised shell on.

    ``fsc_randomised`` is the masked FSC of the half maps whose phases were randomised beyond
    shell ``randomised_from_shell``; below it the masked FSC stands as it is.
    """
    masked = np.asarray(fsc_masked, dtype=float)
    noise = np.asarray(fsc_randomised, dtype=float)
    corrected = masked.copy()
    tail = np.arange(len(masked)) >= randomised_from_shell
    denominator = np.where(noise < 1.0, 1.0 - noise, 1.0)
    corrected[tail] = ((masked - noise) / denominator)[tail]
    return corrected


def fsc_weighting(fsc: np.ndarray) -> np.ndarray:
    """Per-shell weight sqrt(2 FSC / (1 + FSC)) of Rosenthal & Henderson (2003), 0 where FSC ≤ 0."""
    values = np.clip(np.asarray(fsc, dtype=float), 0.0, 1.0)
    return np.sqrt(2 * values / (1 + values))


def crop_rfft(spectrum: np.ndarray, box_out: int) -> np.ndarray:
    """Fourier crop of rfftn-layout arrays (..., B, B, B//2+1) to (..., b, b, b//2+1).

    Keeps the frequencies |k| < b / 2 of every axis (and -b / 2), i.e. the spectrum of the box
    binned by B / b; values are not rescaled.
    """
    box_in = spectrum.shape[-3]
    if box_out == box_in:
        return spectrum
    if box_out > box_in:
        raise ValueError(f"crop_rfft: cannot enlarge a box of {box_in} to {box_out}")
    low = box_out - box_out // 2  # frequencies 0 … low-1, then -box_out//2 … -1
    rows = np.r_[0:low, box_in - box_out // 2:box_in]
    return spectrum[..., rows, :, :][..., :, rows, :][..., : box_out // 2 + 1]


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


def radial_power_spectrum(volume: np.ndarray, *,
                          weight: Callable[[tuple[int, ...]], np.ndarray] | None = None,
                          max_voxels: int = 2**24,
                          clip_sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean power |F(k)|² in shells of |k| (cycles/pixel) of a volume, edge-tapered.

    Parameters
    ----------
    volume : array (Z, Y, X)
        Any float volume; one central block of at most ``max_voxels`` is read (memory maps stay
        cheap), its mean removed and its faces tapered (10 %) against edge leakage.
    weight : callable(shape) -> rfft-grid array, optional
        Only grid points where it exceeds 0.5 count (e.g. the measured wedge): a missing wedge
        would otherwise lower every shell's mean.
    clip_sigma : float, optional
        Clip values beyond this many robust standard deviations (median/MAD) first, so that a
        few very dense objects (gold beads) do not make the spectrum theirs.

    Returns
    -------
    frequencies : array (M,)
        Shell centres, cycles/pixel, from 0 to √3/2 in steps of 1/max(block shape).
    power : array (M,)
        Mean power per shell (0 where a shell holds no grid point).
    """
    from tomoweave.algorithms.windows import cosine_taper

    shape = list(volume.shape)
    while np.prod(shape) > max_voxels:
        axis = int(np.argmax(shape))
        shape[axis] = max(8, int(shape[axis] * 0.8))
    block = tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(volume.shape, shape,
                                                                           strict=True))
    data = np.asarray(volume[block], dtype=np.float32)
    if clip_sigma is not None:
        median = float(np.median(data))
        spread = 1.4826 * float(np.median(np.abs(data - median))) or float(data.std()) or 1.0
        data = np.clip(data, median - clip_sigma * spread, median + clip_sigma * spread)
    data = (data - data.mean()) * cosine_taper(data.shape, 0.1)
    power = np.abs(scipy.fft.rfftn(data, workers=-1)) ** 2
    kz, ky, kx = rfft_frequencies(data.shape)
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    step = 1.0 / max(data.shape)
    shell = np.rint(radius / step).astype(np.int64)
    keep = np.ones(power.shape, dtype=bool) if weight is None else (
        np.broadcast_to(weight(data.shape), power.shape) > 0.5)
    count = np.bincount(shell[keep], minlength=shell.max() + 1)
    frequencies = np.arange(count.size) * step
    total = np.bincount(shell[keep], weights=power[keep], minlength=shell.max() + 1)
    return frequencies, np.where(count > 0, total / np.maximum(count, 1), 0.0)


def radial_filter(shape_zyx: tuple[int, int, int], frequencies: np.ndarray,
                  values: np.ndarray) -> np.ndarray:
    """A radial profile (``values`` at ``frequencies``, cycles/pixel) on the rfftn grid, float32.

    Linear interpolation in |k|; beyond the last frequency the last value holds.
    """
    kz, ky, kx = rfft_frequencies(shape_zyx)
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    return np.interp(radius, frequencies, values).astype(np.float32)


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


def fourier_pad(volume: np.ndarray, size: int) -> np.ndarray:
    """Upsample a cubic volume to ``size`` by zero-padding its spectrum (the inverse of
    :func:`fourier_crop`: the centre stays at index N // 2, no new frequencies appear)."""
    box = volume.shape[0]
    if size == box:
        return volume.astype(np.float32)
    if size < box:
        raise ValueError(f"fourier_pad: cannot shrink {volume.shape} to {size}")
    spectrum = scipy.fft.fftshift(scipy.fft.fftn(volume, workers=-1))
    lo = size // 2 - box // 2
    padded = np.zeros((size,) * 3, dtype=np.complex128)
    padded[lo:lo + box, lo:lo + box, lo:lo + box] = spectrum
    out = scipy.fft.ifftn(scipy.fft.ifftshift(padded), workers=-1).real
    return (out * (size**3 / box**3)).astype(np.float32)


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
