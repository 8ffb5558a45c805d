"""Rotations in Fourier space: padded reference grids, rotated samples, insertion, symmetrising.

A *grid* here is a full, centred complex Fourier volume (P, P, P) (zero frequency at index
P // 2) of a real-space box zero-padded by ``pad`` (P = pad · box), so that trilinear
interpolation between its voxels is accurate (RELION's projector and back-projector). A
particle of rotation R (reference → particle) holds at frequency k the reference's value at
Rᵀ k: :func:`sample_rotated` reads a reference that way, :func:`insert_voxels` writes a
particle's data back into the reference frame.

Frequencies ``k`` are given as (n, 3) float arrays in (x, y, z), in units of the grid's own
spacing divided by ``scale`` (``scale = pad`` for the voxels of an unpadded box).

The kernels release the GIL (``nogil``): callers run particles in threads.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.fft


def gridding_correction(box_px: int, padded_px: int) -> np.ndarray:
    """Real-space sinc² apodisation of trilinear interpolation on a grid of ``padded_px``.

    Interpolating (or splatting) linearly between Fourier voxels multiplies the real-space map
    by sinc²(x / padded_px) along each axis (x from the centre of the box); dividing by this
    (box³, float32) undoes it.
    """
    x = (np.arange(box_px) - box_px // 2) / float(padded_px)
    one = np.sinc(x) ** 2
    return (one[:, None, None] * one[None, :, None] * one[None, None, :]).astype(np.float32)


def reference_grid(volume: np.ndarray, pad: int = 2) -> np.ndarray:
    """The centred, padded Fourier grid of a real-space reference (box³ -> (pad·box)³, complex64).

    The reference is divided by the gridding correction first, so that samples taken by
    trilinear interpolation (:func:`sample_rotated`) are those of the reference itself.
    """
    box = volume.shape[0]
    padded = pad * box
    corrected = np.asarray(volume, dtype=np.float32) / gridding_correction(box, padded)
    return centred_spectrum(corrected, padded)


def centred_spectrum(volume: np.ndarray, padded_px: int) -> np.ndarray:
    """Full centred spectrum (complex64, padded_px³) of a volume zero-padded about its centre.

    The box centre (index box // 2) goes to the origin before the transform, so rotations of
    the spectrum about its centre rotate the map about its centre.
    """
    box = volume.shape[0]
    canvas = np.zeros((padded_px,) * 3, dtype=np.float32)
    lo = padded_px // 2 - box // 2
    canvas[lo:lo + box, lo:lo + box, lo:lo + box] = volume
    spectrum = scipy.fft.fftn(scipy.fft.ifftshift(canvas), workers=-1)
    return scipy.fft.fftshift(spectrum).astype(np.complex64)


def map_from_grid(grid: np.ndarray, box_px: int) -> np.ndarray:
    """Real-space map (box³, float32) of a centred padded grid, gridding-corrected."""
    padded = grid.shape[0]
    volume = scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(grid), workers=-1).real)
    lo = padded // 2 - box_px // 2
    crop = volume[lo:lo + box_px, lo:lo + box_px, lo:lo + box_px]
    return (crop / gridding_correction(box_px, padded)).astype(np.float32)


def half_grid_voxels(box_px: int, radius_px: float) -> dict[str, np.ndarray]:
    """The voxels of a box's rfftn half grid within ``radius_px`` of the origin.

    Returns ``flat`` (index into the raveled (box, box, box//2+1) grid), ``k`` ((n, 3) float32
    frequencies (x, y, z) in voxels), ``shell`` (int32) and ``multiplicity`` (float32: 0.5 on
    the plane kx = 0, whose voxels are there with their mirror images, else 1) — the weight of
    inserting a voxel and its conjugate.
    """
    radius = min(float(radius_px), box_px // 2 - 1.0)
    freq = np.fft.fftfreq(box_px) * box_px
    kz, ky, kx = np.meshgrid(freq, freq, np.arange(box_px // 2 + 1), indexing="ij")
    length = np.sqrt(kx**2 + ky**2 + kz**2)
    inside = np.flatnonzero(length.ravel() <= radius + 1e-6)
    k = np.stack([kx.ravel()[inside], ky.ravel()[inside], kz.ravel()[inside]], 1)
    return {"flat": inside, "k": k.astype(np.float32),
            "shell": np.rint(length.ravel()[inside]).astype(np.int32),
            "multiplicity": np.where(k[:, 0] == 0, 0.5, 1.0).astype(np.float32)}


def sample_rotated(grid: np.ndarray, rotations: np.ndarray, k_xyz: np.ndarray,
                   scale: float) -> np.ndarray:
    """Values of a reference grid at Rᵀ k for every rotation R, (M, n) complex64.

    Parameters
    ----------
    grid : complex64 (P, P, P), centred
    rotations : (M, 3, 3) float
        Particle rotations (reference -> particle), active, in (x, y, z).
    k_xyz : (n, 3) float32
        Frequencies of the particle's voxels (x, y, z), in its own voxels.
    scale : float
        Grid voxels per particle voxel (the padding factor).
    """
    matrices = np.ascontiguousarray(np.asarray(rotations, dtype=np.float32).reshape(-1, 3, 3))
    out = np.empty((len(matrices), len(k_xyz)), dtype=np.complex64)
    _sample_rotated(grid, matrices, np.ascontiguousarray(k_xyz, dtype=np.float32),
                    np.float32(scale), out)
    return out


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _scaled_transpose(r, scale):  # pragma: no cover - numba
    return (r[0, 0] * scale, r[1, 0] * scale, r[2, 0] * scale, r[0, 1] * scale,
            r[1, 1] * scale, r[2, 1] * scale, r[0, 2] * scale, r[1, 2] * scale,
            r[2, 2] * scale)


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _trilinear(grid, qx, qy, qz):  # pragma: no cover - numba
    # callers keep |q| ≤ pad · (box / 2 − 1), so all eight neighbours lie inside the grid
    x0, y0, z0 = int(qx), int(qy), int(qz)
    fx, fy, fz = qx - x0, qy - y0, qz - z0
    gx, gy, gz = 1 - fx, 1 - fy, 1 - fz
    c00 = grid[z0, y0, x0] * gx + grid[z0, y0, x0 + 1] * fx
    c01 = grid[z0, y0 + 1, x0] * gx + grid[z0, y0 + 1, x0 + 1] * fx
    c10 = grid[z0 + 1, y0, x0] * gx + grid[z0 + 1, y0, x0 + 1] * fx
    c11 = grid[z0 + 1, y0 + 1, x0] * gx + grid[z0 + 1, y0 + 1, x0 + 1] * fx
    return (c00 * gy + c01 * fy) * gz + (c10 * gy + c11 * fy) * fz


@numba.njit(cache=True, nogil=True, fastmath=True)
def _sample_rotated(grid, matrices, k_xyz, scale, out):  # pragma: no cover - numba
    centre = np.float32(grid.shape[0] // 2)
    for m in range(matrices.shape[0]):
        t00, t01, t02, t10, t11, t12, t20, t21, t22 = _scaled_transpose(matrices[m], scale)
        for i in range(k_xyz.shape[0]):
            kx, ky, kz = k_xyz[i, 0], k_xyz[i, 1], k_xyz[i, 2]
            out[m, i] = _trilinear(grid, t00 * kx + t01 * ky + t02 * kz + centre,
                                   t10 * kx + t11 * ky + t12 * kz + centre,
                                   t20 * kx + t21 * ky + t22 * kz + centre)


def insert_voxels(numerator: np.ndarray, denominator: np.ndarray, values: np.ndarray,
                  weights: np.ndarray, k_xyz: np.ndarray, rotation: np.ndarray,
                  multiplicity: np.ndarray, scale: float = 1.0) -> None:
    """Add one particle's voxels to a reference-frame grid, in place.

    ``values`` (n,) complex: the particle's premultiplied data (centred phase, shift undone);
    ``weights`` (n,) float: its CTF² weight; both splatted trilinearly at Rᵀ k · scale into
    ``numerator`` (complex64) and ``denominator`` (float32), times ``multiplicity``. The
    conjugate voxels (at −Rᵀ k) are not written: add the mirrored grid once at the end
    (:func:`~tomoweave.algorithms.averaging.reconstruction.hermitian_sum`).
    """
    _insert_voxels(numerator, denominator, np.ascontiguousarray(values, dtype=np.complex64),
                   np.ascontiguousarray(weights, dtype=np.float32),
                   np.ascontiguousarray(k_xyz, dtype=np.float32),
                   np.ascontiguousarray(rotation, dtype=np.float32),
                   np.ascontiguousarray(multiplicity, dtype=np.float32), np.float32(scale))


@numba.njit(cache=True, nogil=True)
def _insert_voxels(numerator, denominator, values, weights, k_xyz, r, multiplicity,
                   scale):  # pragma: no cover - numba
    centre = numerator.shape[0] // 2
    limit = numerator.shape[0] - 1
    for i in range(k_xyz.shape[0]):
        kx, ky, kz = k_xyz[i, 0], k_xyz[i, 1], k_xyz[i, 2]
        qx = (r[0, 0] * kx + r[1, 0] * ky + r[2, 0] * kz) * scale + centre
        qy = (r[0, 1] * kx + r[1, 1] * ky + r[2, 1] * kz) * scale + centre
        qz = (r[0, 2] * kx + r[1, 2] * ky + r[2, 2] * kz) * scale + centre
        x0, y0, z0 = int(np.floor(qx)), int(np.floor(qy)), int(np.floor(qz))
        if x0 < 0 or y0 < 0 or z0 < 0 or x0 >= limit or y0 >= limit or z0 >= limit:
            continue
        value = values[i] * multiplicity[i]
        weight = weights[i] * multiplicity[i]
        fx, fy, fz = qx - x0, qy - y0, qz - z0
        for dz in range(2):
            wz = fz if dz else 1.0 - fz
            for dy in range(2):
                wy = fy if dy else 1.0 - fy
                for dx in range(2):
                    w = wz * wy * (fx if dx else 1.0 - fx)
                    numerator[z0 + dz, y0 + dy, x0 + dx] += w * value
                    denominator[z0 + dz, y0 + dy, x0 + dx] += w * weight


def symmetrise_grid(grid: np.ndarray, operators: np.ndarray) -> np.ndarray:
    """Σ over the point group of the grid rotated by each operator (same dtype, new array).

    Applied to the numerator and the denominator of a reconstruction this is RELION's
    ``BackProjector::symmetrise``: every particle then counts once per symmetry mate.
    """
    if len(operators) == 1:
        return grid.copy()
    out = np.zeros_like(grid)
    matrices = np.ascontiguousarray(np.asarray(operators, dtype=np.float32))
    if np.iscomplexobj(grid):
        _symmetrise_complex(grid, matrices, out)
    else:
        _symmetrise_real(grid, matrices, out)
    return out


@numba.njit(cache=True, nogil=True)
def _symmetrise_complex(grid, matrices, out):  # pragma: no cover - numba
    _symmetrise(grid, matrices, out)


@numba.njit(cache=True, nogil=True)
def _symmetrise_real(grid, matrices, out):  # pragma: no cover - numba
    _symmetrise(grid, matrices, out)


@numba.njit(cache=True, nogil=True, inline="always")
def _symmetrise(grid, matrices, out):  # pragma: no cover - numba
    n = grid.shape[0]
    centre = n // 2
    radius2 = (centre - 1) ** 2
    for z in range(n):
        for y in range(n):
            for x in range(n):
                kx, ky, kz = x - centre, y - centre, z - centre
                if kx * kx + ky * ky + kz * kz > radius2:
                    continue
                total = out[z, y, x] * 0
                for m in range(matrices.shape[0]):
                    r = matrices[m]
                    qx = r[0, 0] * kx + r[0, 1] * ky + r[0, 2] * kz + centre
                    qy = r[1, 0] * kx + r[1, 1] * ky + r[1, 2] * kz + centre
                    qz = r[2, 0] * kx + r[2, 1] * ky + r[2, 2] * kz + centre
                    x0, y0, z0 = int(np.floor(qx)), int(np.floor(qy)), int(np.floor(qz))
                    if x0 < 0 or y0 < 0 or z0 < 0 or x0 >= n - 1 or y0 >= n - 1 or z0 >= n - 1:
                        continue
                    fx, fy, fz = qx - x0, qy - y0, qz - z0
                    for dz in range(2):
                        wz = fz if dz else 1.0 - fz
                        for dy in range(2):
                            wy = fy if dy else 1.0 - fy
                            for dx in range(2):
                                wx = fx if dx else 1.0 - fx
                                total += wz * wy * wx * grid[z0 + dz, y0 + dy, x0 + dx]
                out[z, y, x] = total


def correlate_rotated(grid: np.ndarray, rotations: np.ndarray, k_xyz: np.ndarray, scale: float,
                      data: np.ndarray, norm_weight: np.ndarray, cosines: np.ndarray,
                      sines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlations of a particle with the reference at many rotations and a few shifts.

    For every rotation R (reference sampled at Rᵀ k, as :func:`sample_rotated`) returns
    ``Re Σ_i data_i · conj(S(Rᵀ k_i)) · (cosines[i, j] + i sines[i, j])`` for each shift j, and
    ``Σ_i norm_weight_i · |S(Rᵀ k_i)|²``; one pass, no (M, n) temporary.

    Returns (correlations (M, T) float32, norms (M,) float32).
    """
    matrices = np.ascontiguousarray(np.asarray(rotations, dtype=np.float32).reshape(-1, 3, 3))
    correlations = np.zeros((len(matrices), cosines.shape[1]), dtype=np.float32)
    norms = np.zeros(len(matrices), dtype=np.float32)
    _correlate_rotated(grid, matrices, np.ascontiguousarray(k_xyz, dtype=np.float32),
                       np.float32(scale), np.ascontiguousarray(data, dtype=np.complex64),
                       np.ascontiguousarray(norm_weight, dtype=np.float32), cosines, sines,
                       correlations, norms)
    return correlations, norms


@numba.njit(cache=True, nogil=True, fastmath=True)
def _correlate_rotated(grid, matrices, k_xyz, scale, data, norm_weight, cosines, sines,
                       correlations, norms):  # pragma: no cover - numba
    centre = np.float32(grid.shape[0] // 2)
    n_shifts = cosines.shape[1]
    for m in range(matrices.shape[0]):
        t00, t01, t02, t10, t11, t12, t20, t21, t22 = _scaled_transpose(matrices[m], scale)
        norm = np.float32(0)
        row = correlations[m]
        for i in range(k_xyz.shape[0]):
            kx, ky, kz = k_xyz[i, 0], k_xyz[i, 1], k_xyz[i, 2]
            value = _trilinear(grid, t00 * kx + t01 * ky + t02 * kz + centre,
                               t10 * kx + t11 * ky + t12 * kz + centre,
                               t20 * kx + t21 * ky + t22 * kz + centre)
            norm += norm_weight[i] * (value.real * value.real + value.imag * value.imag)
            product = np.conj(value) * data[i]
            pr, pi = product.real, -product.imag
            cos_row, sin_row = cosines[i], sines[i]
            for j in range(n_shifts):
                row[j] += pr * cos_row[j] + pi * sin_row[j]
        norms[m] = norm
