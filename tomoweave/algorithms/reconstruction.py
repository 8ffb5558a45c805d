"""Tomogram reconstruction: weighted back-projection (WBP) and SIRT, with CTF phase flipping.

Every tilt image is resampled once into the axis-aligned frame of its projection matrix
(projector.align_image), optionally phase-flipped, filtered along u (WBP only) and stored as
rows [v, tilt, u]; the numba projector then back-projects one Y-slab through all tilts at a time.

CTF correction follows the simulator's and CTFFIND's convention: defocus positive for underfocus
at the tilt axis, and a point at height h (Å, third row of the projection matrix, +z towards the
source) is at defocus ``defocus + h``. For a point of the tomogram at height Z above the centre
plane that projects to aligned-frame column u (Å from the centre), ``h = -tan(tilt) u +
Z / cos(tilt)``. ``phase_flip`` corrects every tilt in strips parallel to the tilt axis for Z = 0;
``3d`` reconstructs the tomogram in slabs of Z, each from images flipped for its own height
(novaCTF's idea).

Units: Å and degrees at the interface, pixels inside. Arrays float32, volumes [z, y, x].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms import projector
from tomoweave.algorithms.ctf_model import ctf_2d, electron_wavelength_a

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "sirt-like")
CTF_MODES = ("none", "phase_flip", "3d")
# defocus(point) = defocus_at_axis + DEFOCUS_PER_HEIGHT * height_a (the simulator's convention)
DEFOCUS_PER_HEIGHT = 1.0

ImageLoader = Callable[[int], np.ndarray]


@dataclass
class CtfSettings:
    """Per-tilt CTF (defocus at the tilt axis) and the microscope, for phase flipping."""

    defocus_u_a: Sequence[float]
    defocus_v_a: Sequence[float]
    astigmatism_angle_deg: Sequence[float]
    phase_shift_deg: Sequence[float] | None = None
    voltage_kv: float = 300.0
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_step_a: float | None = None  # strip / slab defocus spacing; None: pixel² / λ

    def step_a(self, pixel_size_a: float) -> float:
        """Defocus spacing that keeps the phase error below π/4 at Nyquist (at least 50 Å)."""
        if self.defocus_step_a:
            return float(self.defocus_step_a)
        return max(50.0, pixel_size_a**2 / electron_wavelength_a(self.voltage_kv))


@dataclass
class Geometry:
    """What the kernels need about one series: matrices, sizes and pixel sizes."""

    matrices: np.ndarray          # (T, 4, 4), tomogram Å -> image Å
    image_shape_yx: tuple[int, int]
    pixel_size_a: float           # of the (binned) images and of the tomogram
    volume_shape_zyx: tuple[int, int, int]

    def coefficients(self, z_start: int = 0, z_stop: int | None = None) -> np.ndarray:
        """Voxel -> aligned-image coefficients for the sub-volume of rows z_start:z_stop."""
        coefficients = projector.voxel_to_image_coefficients(
            self.matrices, self.volume_shape_zyx, self.image_shape_yx, self.pixel_size_a,
            self.pixel_size_a)
        coefficients[:, 0] += coefficients[:, 3] * z_start
        coefficients[:, 4] += coefficients[:, 6] * z_start
        return coefficients

    def tilt_deg(self) -> np.ndarray:
        """Tilt angle about Y of each tilt, from its matrix, degrees."""
        rotations = projector.tilt_rotations(self.matrices)
        return np.degrees(np.arctan2(rotations[:, 0, 2], rotations[:, 0, 0]))


def make_geometry(matrices: np.ndarray, image_shape_yx: tuple[int, int], pixel_size_a: float,
                  thickness_a: float, volume_size_xy: tuple[int, int] | None = None) -> Geometry:
    """Geometry of a tomogram of ``thickness_a`` Å over the binned images of ``image_shape_yx``."""
    matrices = np.asarray(matrices, dtype=float)
    if matrices.ndim != 3 or matrices.shape[1:] != (4, 4) or len(matrices) == 0:
        raise ValueError(f"matrices: expected shape (T, 4, 4) with T >= 1, got {matrices.shape}")
    if thickness_a <= 0 or pixel_size_a <= 0:
        raise ValueError(f"thickness_a ({thickness_a}) and pixel_size_a ({pixel_size_a}) must be > 0")
    nz = max(1, int(round(thickness_a / pixel_size_a)))
    nx, ny = volume_size_xy or (image_shape_yx[1], image_shape_yx[0])
    return Geometry(matrices, tuple(image_shape_yx), float(pixel_size_a), (nz, ny, nx))


# ----------------------------------------------------------------------------- filters
def wbp_filter(n_padded: int, name: str = "ramp", sirt_iterations: int = 10) -> np.ndarray:
    """Weighting along u on the rfft grid of a row padded to ``n_padded``: shape (n//2+1,).

    ``ramp`` is |k| (k in cycles/pixel); ``shepp-logan``, ``cosine`` and ``hamming`` apodise it
    towards Nyquist; ``sirt-like`` is the ramp times ``1 - (1 - k_min/|k|)^N``, the response of
    N Landweber (SIRT) iterations (Zeng 2012), which damps high frequencies like SIRT does.
    """
    if name not in FILTERS:
        raise ValueError(f"filter {name!r}: expected one of {list(FILTERS)}")
    k = np.fft.rfftfreq(n_padded)
    ramp = np.abs(k)
    if name == "shepp-logan":
        ramp = ramp * np.sinc(k)
    elif name == "cosine":
        ramp = ramp * np.cos(np.pi * k)
    elif name == "hamming":
        ramp = ramp * (0.54 + 0.46 * np.cos(2 * np.pi * k))
    elif name == "sirt-like":
        if sirt_iterations < 1:
            raise ValueError(f"sirt_iterations must be >= 1, got {sirt_iterations}")
        k_min = 1.0 / n_padded
        sigma = np.where(ramp > 0, k_min / np.maximum(ramp, k_min), 1.0)
        ramp = ramp * (1.0 - (1.0 - sigma) ** sirt_iterations)
    return ramp.astype(np.float32)


def tilt_weights(tilt_deg: np.ndarray) -> np.ndarray:
    """Angular interval (radians) each tilt stands for: half the gap to each neighbour."""
    tilt_deg = np.asarray(tilt_deg, dtype=float)
    if len(tilt_deg) == 1:
        return np.array([np.pi])
    order = np.argsort(tilt_deg)
    sorted_rad = np.radians(tilt_deg[order])
    gaps = np.diff(sorted_rad)
    left = np.concatenate([[gaps[0]], gaps])
    right = np.concatenate([gaps, [gaps[-1]]])
    weights = np.empty_like(sorted_rad)
    weights[order] = 0.5 * (left + right)
    return weights


def filter_rows(image: np.ndarray, weights_rfft: np.ndarray) -> np.ndarray:
    """Filter every row of an image along x with an rfft weighting, edge-padded (no wrap)."""
    ny, nx = image.shape
    n_padded = 2 * (len(weights_rfft) - 1)
    pad = n_padded - nx
    padded = np.pad(image, ((0, 0), (pad // 2, pad - pad // 2)), mode="edge")
    spectrum = scipy.fft.rfft(padded, axis=1, workers=-1)
    spectrum *= weights_rfft[None, :]
    filtered = scipy.fft.irfft(spectrum, n=n_padded, axis=1, workers=-1)
    return filtered[:, pad // 2: pad // 2 + nx].astype(np.float32)


def padded_length(n: int) -> int:
    """Even FFT-friendly length of at least twice ``n`` (no wrap-around of the ramp)."""
    length = scipy.fft.next_fast_len(2 * n)
    return length + (length % 2)


# ----------------------------------------------------------------------------- CTF
def phase_flip_strips(image: np.ndarray, matrix: np.ndarray, pixel_size_a: float,
                      ctf: CtfSettings, tilt_index: int, height_a: float = 0.0) -> np.ndarray:
    """Phase-flip an aligned-frame image in strips parallel to the tilt axis (columns u).

    Column u (Å from the centre) is at defocus ``defocus + DEFOCUS_PER_HEIGHT * (-tan(t) u +
    height_a / cos(t))``. The image is flipped at defocus values spaced ``ctf.step_a`` apart and
    each column is the linear blend of the two flips around its own defocus.
    """
    ny, nx = image.shape
    rotation = projector.tilt_rotations(matrix[None])[0]
    affine, _ = projector.in_plane_affine(matrix)
    in_plane_deg = math.degrees(math.atan2(affine[1, 0], affine[0, 0]))
    tan_t = rotation[0, 2] / rotation[0, 0]
    cos_t = rotation[0, 0]
    u_a = (np.arange(nx) - nx // 2) * pixel_size_a
    change_a = DEFOCUS_PER_HEIGHT * (-tan_t * u_a + height_a / cos_t)
    step = ctf.step_a(pixel_size_a)
    low, high = float(change_a.min()), float(change_a.max())
    grid = low + step * np.arange(max(1, int(math.ceil((high - low) / step - 1e-9))) + 1)
    spectrum = scipy.fft.rfft2(image, workers=-1)
    phase = 0.0 if ctf.phase_shift_deg is None else ctf.phase_shift_deg[tilt_index]
    flipped = []
    for change in grid:
        values = ctf_2d((ny, nx), pixel_size_a, ctf.defocus_u_a[tilt_index] + change,
                        ctf.defocus_v_a[tilt_index] + change,
                        ctf.astigmatism_angle_deg[tilt_index] - in_plane_deg, ctf.voltage_kv,
                        ctf.spherical_aberration_mm, ctf.amplitude_contrast, phase, rfft=True)
        # -sign(CTF): the transfer becomes -|CTF|, so dense objects stay dark as in the images
        flipped.append(scipy.fft.irfft2(spectrum * -np.sign(values), s=(ny, nx), workers=-1))
    if len(grid) == 1:
        return flipped[0].astype(np.float32)
    position = np.clip((change_a - low) / step, 0, len(grid) - 1)
    index = np.minimum(position.astype(int), len(grid) - 2)
    fraction = (position - index).astype(np.float32)
    stack = np.stack(flipped)
    columns = np.arange(nx)
    out = stack[index, :, columns].T * (1 - fraction) + stack[index + 1, :, columns].T * fraction
    return out.astype(np.float32)


def ctf_height_slabs(geometry: Geometry, ctf: CtfSettings) -> list[tuple[int, int, float]]:
    """(z_start, z_stop, height_a of the slab centre) covering the tomogram, for 3D CTF."""
    nz = geometry.volume_shape_zyx[0]
    step_px = max(1, int(ctf.step_a(geometry.pixel_size_a) // geometry.pixel_size_a))
    slabs = []
    for start in range(0, nz, step_px):
        stop = min(nz, start + step_px)
        centre_px = 0.5 * (start + stop - 1) - nz // 2
        slabs.append((start, stop, centre_px * geometry.pixel_size_a))
    return slabs


# ----------------------------------------------------------------------------- rows
def prepare_rows(load_image: ImageLoader, geometry: Geometry, filter_weights: np.ndarray | None,
                 ctf: CtfSettings | None = None, height_a: float = 0.0) -> np.ndarray:
    """Aligned, optionally phase-flipped and filtered images as rows [v, tilt, u], float32.

    ``load_image(i)`` returns tilt i at the geometry's pixel size, shape ``image_shape_yx``.
    """
    ny, nx = geometry.image_shape_yx
    n_tilts = len(geometry.matrices)
    rows = np.empty((ny, n_tilts, nx), dtype=np.float32)
    for index in range(n_tilts):
        image = np.asarray(load_image(index), dtype=np.float32)
        if image.shape != (ny, nx):
            raise ValueError(f"tilt {index}: image shape {image.shape}, expected {(ny, nx)}")
        matrix = geometry.matrices[index]
        aligned = projector.align_image(image, matrix, geometry.pixel_size_a)
        if ctf is not None:
            aligned = phase_flip_strips(aligned, matrix, geometry.pixel_size_a, ctf, index,
                                        height_a)
        if filter_weights is not None:
            aligned = filter_rows(aligned, filter_weights)
        rows[:, index, :] = aligned
    return rows


# ----------------------------------------------------------------------------- WBP
def reconstruct_wbp(load_image: ImageLoader, geometry: Geometry, filter_name: str = "ramp",
                    ctf: CtfSettings | None = None, ctf_mode: str = "none",
                    sirt_iterations: int = 10) -> np.ndarray:
    """Weighted back-projection of one tilt series.

    Parameters
    ----------
    load_image : callable(int) -> array (ny, nx)
        Tilt i at the reconstruction pixel size (binned), in the order of ``geometry.matrices``.
    geometry : Geometry
        From :func:`make_geometry`.
    filter_name : one of FILTERS
    ctf, ctf_mode : CtfSettings, one of CTF_MODES
        Phase flipping in strips (``phase_flip``) or per height slab (``3d``).

    Returns
    -------
    tomogram : array (nz, ny, nx), float32; index N // 2 is the centre.
    """
    _check_ctf(ctf, ctf_mode, len(geometry.matrices))
    weights_rfft = wbp_filter(padded_length(geometry.image_shape_yx[1]), filter_name,
                              sirt_iterations)
    angle_weights = tilt_weights(geometry.tilt_deg())
    volume = np.zeros(geometry.volume_shape_zyx, dtype=np.float32)
    if ctf_mode == "3d":
        for start, stop, height_a in ctf_height_slabs(geometry, ctf):
            rows = prepare_rows(load_image, geometry, weights_rfft, ctf, height_a)
            projector.backproject(rows, geometry.coefficients(start), volume[start:stop].shape,
                                  angle_weights, out=volume[start:stop])
            del rows
        return volume
    rows = prepare_rows(load_image, geometry, weights_rfft, ctf if ctf_mode != "none" else None)
    projector.backproject(rows, geometry.coefficients(), geometry.volume_shape_zyx,
                          angle_weights, out=volume)
    return volume


# ----------------------------------------------------------------------------- SIRT
def reconstruct_sirt(load_image: ImageLoader, geometry: Geometry, iterations: int = 10,
                     relaxation: float = 1.0, ctf: CtfSettings | None = None,
                     ctf_mode: str = "none",
                     callback: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """SIRT: ``x += relaxation * C * A^T (R * (b - A x))`` with R, C the inverse row and column
    sums of the projector, starting from zero, for a fixed number of iterations.

    ``ctf_mode`` ``phase_flip`` reconstructs from strip-flipped images (``3d`` is WBP-only and
    is treated as ``phase_flip`` here). ``callback(iteration, volume)`` is called after each
    iteration (for convergence plots).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    _check_ctf(ctf, ctf_mode, len(geometry.matrices))
    rows = prepare_rows(load_image, geometry, None, ctf if ctf_mode != "none" else None)
    coefficients = geometry.coefficients()
    shape = geometry.volume_shape_zyx
    row_sums = projector.forward_project(np.ones(shape, np.float32), coefficients, rows.shape)
    inverse_rows = _safe_inverse(row_sums)
    del row_sums
    column_sums = projector.backproject(np.ones_like(rows), coefficients, shape)
    inverse_columns = _safe_inverse(column_sums) * np.float32(relaxation)
    del column_sums
    volume = np.zeros(shape, dtype=np.float32)
    for iteration in range(iterations):
        residual = rows - projector.forward_project(volume, coefficients, rows.shape)
        residual *= inverse_rows
        update = projector.backproject(residual, coefficients, shape)
        update *= inverse_columns
        volume += update
        if callback is not None:
            callback(iteration, volume)
    return volume


def _safe_inverse(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values)
    np.divide(1.0, values, out=out, where=values > 1e-6)
    return out


def _check_ctf(ctf: CtfSettings | None, ctf_mode: str, n_tilts: int) -> None:
    if ctf_mode not in CTF_MODES:
        raise ValueError(f"ctf_mode {ctf_mode!r}: expected one of {list(CTF_MODES)}")
    if ctf_mode != "none":
        if ctf is None:
            raise ValueError(f"ctf_mode {ctf_mode!r} needs per-tilt CTF values")
        if len(ctf.defocus_u_a) != n_tilts:
            raise ValueError(f"ctf: {len(ctf.defocus_u_a)} defocus values for {n_tilts} tilts")


# ----------------------------------------------------------------------------- scoring
def lowpass_correlation(volume: np.ndarray, truth: np.ndarray, pixel_size_a: float,
                        resolution_a: float | None = None,
                        mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two volumes after the same Fourier low-pass (inside ``mask``)."""
    if volume.shape != truth.shape:
        raise ValueError(f"shapes differ: {volume.shape} vs {truth.shape}")
    a, b = lowpass(volume, pixel_size_a, resolution_a), lowpass(truth, pixel_size_a, resolution_a)
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(np.dot(a, b) / max(np.sqrt(np.dot(a, a) * np.dot(b, b)), 1e-30))


def lowpass(volume: np.ndarray, pixel_size_a: float, resolution_a: float | None) -> np.ndarray:
    """Gaussian-edged low-pass at ``resolution_a`` (None: unchanged), float32."""
    if resolution_a is None:
        return np.asarray(volume, dtype=np.float32)
    spectrum = scipy.fft.rfftn(volume, workers=-1)
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in volume.shape[:-1]],
                        np.fft.rfftfreq(volume.shape[-1]), indexing="ij", sparse=True)
    radius = np.sqrt(sum(g**2 for g in grids)) / pixel_size_a
    spectrum *= np.exp(-np.log(2.0) * (radius * resolution_a) ** 2)  # 0.5 at 1 / resolution
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)
