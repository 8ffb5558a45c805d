"""Back-projection and forward projection of tilt series through per-tilt projection matrices.

The projection matrix of a tilt (geometry.projection) is ``P = T @ mag @ Rz @ Ry @ Rx``. Its
in-plane part ``T @ mag @ Rz`` is an affine map of the image plane, so each tilt image is first
resampled once (:func:`align_image`, Keys cubic convolution) into the *axis-aligned frame* where
that part is the identity. In that frame a voxel at (x, y, z) lands at
``(u, v) = (Ry @ Rx @ r)[:2]``: ``v`` does not depend on x, and ``u`` is linear in x. A row of
voxels along x therefore reads one (or, with an x-tilt, two) image rows. Each image row is
resampled once more at u = cos(tilt) * m ("stretched", Keys cubic, on a grid finer than the
image's); then every voxel row is a constant-fraction shift of a stretched row: two contiguous
loads and two FMAs per voxel-update, which LLVM vectorises (no gathers).

Stacks in the aligned frame are stored row-major as ``[v, tilt, u]`` so that one tomogram
Y-slab (all z, all x at one y) reads one contiguous block of all tilts: the slab and its image
rows stay in cache while every tilt is added. The back-projector runs in parallel over y rows;
the forward projector (its exact transpose) over y rows of one parity at a time (no x-tilt) or
over tilts within blocks of y rows (x-tilt: several y rows may feed one image row).

Numba notes: index arithmetic that numba cannot prove non-negative gets wrap-around checks that
stop vectorisation, hence the slices and zero-based ranges in the inner loops; and an early
``return`` inside an ``inline="always"`` function used in a parfor gave wrong results, hence the
guards at the call sites.

Units: pixels inside this module; :func:`voxel_to_image_coefficients` takes the projection
matrices in Å.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# u (image column, px) and v (image row, px) of voxel (ix, iy, iz), per tilt:
#   u = c[0] + c[1] * ix + c[2] * iy + c[3] * iz ;  v = c[4] + c[5] * iy + c[6] * iz
N_COEFFICIENTS = 7


def voxel_to_image_coefficients(
    matrices: np.ndarray,
    volume_shape_zyx: tuple[int, int, int],
    image_shape_yx: tuple[int, int],
    voxel_size_a: float,
    pixel_size_a: float,
) -> np.ndarray:
    """Affine coefficients from voxel indices to aligned-frame image pixels, shape (T, 7).

    Parameters
    ----------
    matrices : array (T, 4, 4)
        Projection matrices (tomogram Å -> image Å). Only their ``Ry @ Rx`` part is used: the
        in-plane part must have been undone by :func:`align_image`.
    volume_shape_zyx : (nz, ny, nx)
        Tomogram shape; its centre is index N // 2 on each axis.
    image_shape_yx : (ny, nx)
        Shape of the aligned images; centre at index N // 2.
    voxel_size_a, pixel_size_a : float
        Voxel size of the tomogram and pixel size of the images, Å.
    """
    tilt_only = tilt_rotations(matrices)
    nz, ny, nx = volume_shape_zyx
    centre_v = np.array([nx // 2, ny // 2, nz // 2], dtype=float)
    centre_i = np.array([image_shape_yx[1] // 2, image_shape_yx[0] // 2], dtype=float)
    scale = voxel_size_a / pixel_size_a
    coefficients = np.zeros((len(matrices), N_COEFFICIENTS))
    for index, rotation in enumerate(tilt_only):
        rows = rotation[:2] * scale  # (2, 3): d(u, v) / d(ix, iy, iz)
        offset = centre_i - rows @ centre_v
        if abs(rows[1, 0]) > 1e-9:
            raise ValueError("image row v depends on x: the in-plane rotation was not removed")
        coefficients[index] = [offset[0], rows[0, 0], rows[0, 1], rows[0, 2],
                               offset[1], rows[1, 1], rows[1, 2]]
    coefficients[np.abs(coefficients) < 1e-9] = 0.0  # rounding dust, e.g. cos(90°) terms
    return coefficients


def tilt_rotations(matrices: np.ndarray) -> np.ndarray:
    """``Ry @ Rx`` of each projection matrix, (T, 3, 3): the part left in the aligned frame."""
    matrices = np.asarray(matrices, dtype=float)
    if matrices.ndim != 3 or matrices.shape[1:] != (4, 4):
        raise ValueError(f"expected projection matrices of shape (T, 4, 4), got {matrices.shape}")
    out = np.empty((len(matrices), 3, 3))
    for index, matrix in enumerate(matrices):
        in_plane, _ = in_plane_affine(matrix)
        out[index] = matrix[:3, :3].copy()
        out[index][:2] = np.linalg.solve(in_plane, matrix[:2, :3])
        out[index][2] /= np.linalg.norm(out[index][2])
    return out


def in_plane_affine(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The in-plane part ``A`` (2×2, mag @ Rz) and shift ``s`` (Å) of a projection matrix.

    ``P[:2, :3] = A @ (Ry @ Rx)[:2]``; with R = Ry Rx, R[1, 0] = 0 and R[1, 1] = cos(x_tilt) > 0,
    so A follows from the x column and the y column of P.
    """
    m = np.asarray(matrix, dtype=float)
    column_x, column_y, column_z = m[:2, 0], m[:2, 1], m[:2, 2]
    # R[:2] = [[ct, st sx, st cx], [0, cx, -sx]] and A = mag Rot(phi): P_x = ct A[:, 0], so the
    # direction n of A[:, 1] is P_x turned by +90°; then P_y . n = mag cx and P_z . n = -mag sx.
    length = np.linalg.norm(column_x)
    if length < 1e-9:
        raise ValueError("projection matrix with tilt ±90°: the image x axis is degenerate")
    direction = column_x / length
    normal = np.array([-direction[1], direction[0]])
    magnification = math.hypot(column_y @ normal, column_z @ normal)
    a0, a1 = magnification * direction, magnification * normal
    return np.stack([a0, a1], axis=1), m[:2, 3].copy()


# ----------------------------------------------------------------------------- image resampling
def align_image(image: np.ndarray, matrix: np.ndarray, pixel_size_a: float,
                fill: float | None = None) -> np.ndarray:
    """Resample one tilt image into the axis-aligned frame of its projection matrix.

    ``aligned(q) = image(A @ q + s)`` with ``A`` and ``s`` from :func:`in_plane_affine`, both
    images centred at index N // 2. Keys cubic convolution (a = -0.5); pixels that fall outside
    the image get ``fill`` (default: the image mean). Identity maps return a copy.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    affine, shift_a = in_plane_affine(matrix)
    shift_px = shift_a / pixel_size_a
    if np.allclose(affine, np.eye(2), atol=1e-9) and np.allclose(shift_px, 0.0, atol=1e-6):
        return image.copy()
    fill_value = float(image.mean()) if fill is None else float(fill)
    out = np.empty_like(image)
    _resample_affine_cubic(image, affine.astype(np.float64), shift_px.astype(np.float64),
                           np.float32(fill_value), out)
    return out


@numba.njit(parallel=True, fastmath=True, cache=True)
def _resample_affine_cubic(image, affine, shift_px, fill, out):  # pragma: no cover - numba
    ny, nx = image.shape
    cy, cx = ny // 2, nx // 2
    for qy in numba.prange(ny):
        for qx in range(nx):
            dx, dy = qx - cx, qy - cy
            x = affine[0, 0] * dx + affine[0, 1] * dy + shift_px[0] + cx
            y = affine[1, 0] * dx + affine[1, 1] * dy + shift_px[1] + cy
            ix, iy = int(math.floor(x)), int(math.floor(y))
            if ix < 1 or iy < 1 or ix > nx - 3 or iy > ny - 3:
                out[qy, qx] = fill if (x < 0 or y < 0 or x > nx - 1 or y > ny - 1) else \
                    _bilinear_clamped(image, x, y)
                continue
            fx, fy = x - ix, y - iy
            wx0, wx1, wx2, wx3 = _keys(fx)
            wy0, wy1, wy2, wy3 = _keys(fy)
            total = 0.0
            for k in range(4):
                row = image[iy - 1 + k]
                value = (wx0 * row[ix - 1] + wx1 * row[ix] + wx2 * row[ix + 1]
                         + wx3 * row[ix + 2])
                total += value * (wy0 if k == 0 else wy1 if k == 1 else wy2 if k == 2 else wy3)
            out[qy, qx] = total


@numba.njit(inline="always", fastmath=True, cache=True)
def _keys(t):  # pragma: no cover - numba
    """Keys cubic-convolution weights (a = -0.5) of the 4 samples around fraction t."""
    t2, t3 = t * t, t * t * t
    return (-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2)


@numba.njit(inline="always", cache=True)
def _bilinear_clamped(image, x, y):  # pragma: no cover - numba
    ny, nx = image.shape
    ix = min(max(int(math.floor(x)), 0), nx - 2)
    iy = min(max(int(math.floor(y)), 0), ny - 2)
    fx, fy = x - ix, y - iy
    top = image[iy, ix] * (1 - fx) + image[iy, ix + 1] * fx
    bottom = image[iy + 1, ix] * (1 - fx) + image[iy + 1, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


# ----------------------------------------------------------------------------- stretched rows
# Along a row of voxels u = c1 * (ix + s) with a constant s per (y, z, tilt). Resampling each image
# row once at u = c1 * m (m integer; "cosine stretching", Keys cubic) turns every voxel row into a
# constant-fraction shift of the stretched row: two contiguous loads and two FMAs per voxel, which
# vectorises. The stretched grid is finer than the image grid (c1 = cos(tilt) <= 1), so the final
# linear interpolation loses less than direct linear interpolation in u would.
def stretch_layout(coefficients: np.ndarray, n_u: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and offsets of the stretched rows of every tilt in the flat [v, sum(L)] layout."""
    steps = np.asarray(coefficients)[:, 1]
    if np.any(steps < 1e-3):
        raise ValueError("tilt of ±90° or beyond (cos(tilt) * scale < 1e-3) cannot be back-projected")
    lengths = (np.floor((n_u - 1) / steps + 1e-9) + 1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return lengths, offsets


@numba.njit(parallel=True, fastmath=True, cache=True)
def _stretch(rows, steps, offsets, out):  # pragma: no cover - numba
    n_v, n_tilts, n_u = rows.shape
    for j in numba.prange(n_v):
        for t in range(n_tilts):
            row = rows[j, t]
            for m in range(offsets[t + 1] - offsets[t]):
                out[j, offsets[t] + m] = _keys_sample(row, steps[t] * m, n_u)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _stretch_transpose(stretched, steps, offsets, rows):  # pragma: no cover - numba
    n_v, n_tilts, n_u = rows.shape
    for j in numba.prange(n_v):
        for t in range(n_tilts):
            row = rows[j, t]
            for m in range(offsets[t + 1] - offsets[t]):
                _keys_spread(row, steps[t] * m, n_u, stretched[j, offsets[t] + m])


@numba.njit(inline="always", fastmath=True, cache=True)
def _keys_sample(row, u, n_u):  # pragma: no cover - numba
    i = int(math.floor(u))
    w0, w1, w2, w3 = _keys(u - i)
    if 1 <= i and i + 2 <= n_u - 1:
        return w0 * row[i - 1] + w1 * row[i] + w2 * row[i + 1] + w3 * row[i + 2]
    return (w0 * row[_clamp(i - 1, n_u)] + w1 * row[_clamp(i, n_u)]
            + w2 * row[_clamp(i + 1, n_u)] + w3 * row[_clamp(i + 2, n_u)])


@numba.njit(inline="always", fastmath=True, cache=True)
def _keys_spread(row, u, n_u, value):  # pragma: no cover - numba
    i = int(math.floor(u))
    w0, w1, w2, w3 = _keys(u - i)
    row[_clamp(i - 1, n_u)] += w0 * value
    row[_clamp(i, n_u)] += w1 * value
    row[_clamp(i + 1, n_u)] += w2 * value
    row[_clamp(i + 2, n_u)] += w3 * value


@numba.njit(inline="always", cache=True)
def _clamp(index, n):  # pragma: no cover - numba
    return min(max(index, 0), n - 1)


# ----------------------------------------------------------------------------- kernels
@numba.njit(inline="always", cache=True)
def _shift_range(k, length, n_x):  # pragma: no cover - numba
    """ix in [lo, hi) with 0 <= ix + k and ix + k + 1 <= length - 1."""
    lo = max(0, -k)
    hi = min(n_x, length - 1 - k)
    return lo, max(lo, hi)


@numba.njit(inline="always", cache=True)
def _row_of(c, iy, iz, n_v):  # pragma: no cover - numba
    """Image row j, its weight fraction g and the shift s of voxel row (iy, iz); j < 0: none."""
    v = c[4] + c[5] * iy + c[6] * iz
    j = int(math.floor(v + 1e-6))  # snap rows within 1e-6 px of an integer
    g = v - j
    if g < 1e-6:
        g = 0.0
    if j < 0 or j > n_v - 1 or (j == n_v - 1 and g > 0.0):
        return -1, 0.0, 0.0
    return j, g, (c[0] + c[2] * iy + c[3] * iz) / c[1]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _backproject_kernel(stretched, offsets, coefficients, weights, volume):  # pragma: no cover
    n_v = stretched.shape[0]
    n_tilts = coefficients.shape[0]
    nz, ny, nx = volume.shape
    for iy in numba.prange(ny):
        # the (row, shift, weights, range) terms of one voxel row, added two at a time so each
        # load/store of the voxel row serves two tilts
        rows = np.empty(2 * n_tilts, dtype=np.int64)
        bases = np.empty(2 * n_tilts, dtype=np.int64)
        bounds = np.empty((2 * n_tilts, 2), dtype=np.int64)
        w = np.empty((2 * n_tilts, 2), dtype=np.float32)
        for iz in range(nz):
            count = 0
            for t in range(n_tilts):
                j, g, s = _row_of(coefficients[t], iy, iz, n_v)
                if j < 0:
                    continue
                k = int(math.floor(s))
                f = s - k
                lo, hi = _shift_range(k, offsets[t + 1] - offsets[t], nx)
                if hi <= lo:
                    continue
                for part in range(2 if g > 0.0 else 1):
                    share = weights[t] * ((1.0 - g) if part == 0 else g)
                    rows[count] = j + part
                    bases[count] = offsets[t] + k
                    bounds[count, 0] = lo
                    bounds[count, 1] = hi
                    w[count, 0] = share * (1.0 - f)
                    w[count, 1] = share * f
                    count += 1
            out = volume[iz, iy]
            for first in range(0, count - 1, 2):
                _add_pair(out, stretched, rows, bases, bounds, w, first, first + 1)
            if count % 2 == 1:
                last = count - 1
                _add_shifted(out, stretched[rows[last]], bases[last], w[last, 0], w[last, 1],
                             bounds[last, 0], bounds[last, 1])


@numba.njit(inline="always", fastmath=True, cache=True)
def _add_pair(out, stretched, rows, bases, bounds, w, a, b):  # pragma: no cover - numba
    lo = max(bounds[a, 0], bounds[b, 0])
    hi = min(bounds[a, 1], bounds[b, 1])
    if hi <= lo:
        lo = hi = bounds[a, 0]  # disjoint ranges: no common part, each term added alone
    for term in (a, b):  # the parts of each range outside the common one
        row = stretched[rows[term]]
        _add_shifted(out, row, bases[term], w[term, 0], w[term, 1], bounds[term, 0],
                     max(bounds[term, 0], min(lo, bounds[term, 1])))
        _add_shifted(out, row, bases[term], w[term, 0], w[term, 1],
                     min(bounds[term, 1], max(hi, bounds[term, 0])), bounds[term, 1])
    if hi > lo:
        target = out[lo:hi]
        source_a = stretched[rows[a]][bases[a] + lo: bases[a] + hi + 1]
        source_b = stretched[rows[b]][bases[b] + lo: bases[b] + hi + 1]
        a0, a1, b0, b1 = w[a, 0], w[a, 1], w[b, 0], w[b, 1]
        for i in range(hi - lo):
            target[i] += (a0 * source_a[i] + a1 * source_a[i + 1]
                          + b0 * source_b[i] + b1 * source_b[i + 1])


@numba.njit(inline="always", fastmath=True, cache=True)
def _add_shifted(out, row, base, w0, w1, lo, hi):  # pragma: no cover - numba
    # slices + a range from 0 let numba drop negative-index wrapping, so LLVM vectorises
    target = out[lo:hi]
    source = row[base + lo: base + hi + 1]
    for i in range(hi - lo):
        target[i] += w0 * source[i] + w1 * source[i + 1]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _forward_kernel(volume, offsets, coefficients, stretched, block):  # pragma: no cover
    n_v = stretched.shape[0]
    n_tilts = coefficients.shape[0]
    nz, ny, nx = volume.shape
    for y_start in range(0, ny, block):
        # tilts in parallel: each thread owns its tilts' stretched rows, so no write races even
        # when an x-tilt sends several y rows to one image row
        for t in numba.prange(n_tilts):
            for iy in range(y_start, min(ny, y_start + block)):
                for iz in range(nz):
                    j, g, s = _row_of(coefficients[t], iy, iz, n_v)
                    if j < 0:
                        continue
                    k = int(math.floor(s))
                    f = s - k
                    lo, hi = _shift_range(k, offsets[t + 1] - offsets[t], nx)
                    base = offsets[t] + k
                    if hi <= lo:
                        continue
                    source = volume[iz, iy]
                    _spread_shifted(stretched[j], source, base, np.float32((1.0 - g) * (1.0 - f)),
                                    np.float32((1.0 - g) * f), lo, hi)
                    if g > 0.0:
                        _spread_shifted(stretched[j + 1], source, base, np.float32(g * (1.0 - f)),
                                        np.float32(g * f), lo, hi)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _forward_kernel_by_rows(volume, offsets, coefficients, stretched):  # pragma: no cover
    # no x-tilt and >= 1 image row per voxel row: voxel rows y and y + 2 write disjoint image
    # rows, so each parity runs in parallel over y with the y-slab cached across all tilts
    n_v = stretched.shape[0]
    n_tilts = coefficients.shape[0]
    nz, ny, nx = volume.shape
    for parity in range(2):
        for half in numba.prange((ny - parity + 1) // 2):
            iy = 2 * half + parity
            for iz in range(nz):
                source = volume[iz, iy]
                for t in range(n_tilts):
                    j, g, s = _row_of(coefficients[t], iy, iz, n_v)
                    if j < 0:
                        continue
                    k = int(math.floor(s))
                    f = s - k
                    lo, hi = _shift_range(k, offsets[t + 1] - offsets[t], nx)
                    if hi <= lo:
                        continue
                    base = offsets[t] + k
                    _spread_shifted(stretched[j], source, base, np.float32((1.0 - g) * (1.0 - f)),
                                    np.float32((1.0 - g) * f), lo, hi)
                    if g > 0.0:
                        _spread_shifted(stretched[j + 1], source, base, np.float32(g * (1.0 - f)),
                                        np.float32(g * f), lo, hi)


@numba.njit(inline="always", fastmath=True, cache=True)
def _spread_shifted(row, source, base, w0, w1, lo, hi):  # pragma: no cover - numba
    # transpose of _add_shifted written as a gather over the stretched row (vectorises);
    # callers guarantee hi > lo (an early return misbehaves when inlined into a parfor)
    target = row[base + lo: base + hi + 1]
    values = source[lo:hi]
    target[0] += w0 * values[0]
    for i in range(1, hi - lo):
        target[i] += w0 * values[i] + w1 * values[i - 1]
    target[hi - lo] += w1 * values[hi - lo - 1]


# ----------------------------------------------------------------------------- public API
def backproject(rows: np.ndarray, coefficients: np.ndarray, volume_shape_zyx: tuple[int, int, int],
                weights: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Back-project aligned-frame image rows into a volume (adds into ``out`` when given).

    Parameters
    ----------
    rows : array (n_v, T, n_u), float32
        Aligned (and, for WBP, filtered) images stored row-major as [v, tilt, u].
    coefficients : array (T, 7)
        From :func:`voxel_to_image_coefficients`.
    volume_shape_zyx : (nz, ny, nx)
    weights : array (T,), optional
        Per-tilt factors (angular spacing for WBP); ones by default.

    Returns
    -------
    volume : array (nz, ny, nx), float32
    """
    rows, coefficients, weights = _check(rows, coefficients, weights)
    if out is None:
        out = np.zeros(volume_shape_zyx, dtype=np.float32)
    elif out.shape != tuple(volume_shape_zyx) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {volume_shape_zyx}, got {out.shape}")
    lengths, offsets = stretch_layout(coefficients, rows.shape[2])
    stretched = np.empty((rows.shape[0], offsets[-1]), dtype=np.float32)
    _stretch(rows, coefficients[:, 1].copy(), offsets, stretched)
    _backproject_kernel(stretched, offsets, coefficients, weights, out)
    return out


def forward_project(volume: np.ndarray, coefficients: np.ndarray,
                    rows_shape: tuple[int, int, int], block_rows: int = 4) -> np.ndarray:
    """Project a volume into aligned-frame rows [v, tilt, u]: the exact transpose of
    :func:`backproject` (with unit weights), so ``<forward(x), b> == <x, backproject(b)>``.
    """
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"expected a volume [z, y, x], got shape {volume.shape}")
    coefficients = np.ascontiguousarray(coefficients, dtype=np.float64)
    if coefficients.shape != (rows_shape[1], N_COEFFICIENTS):
        raise ValueError(f"coefficients shape {coefficients.shape} != ({rows_shape[1]}, 7)")
    lengths, offsets = stretch_layout(coefficients, rows_shape[2])
    stretched = np.zeros((rows_shape[0], offsets[-1]), dtype=np.float32)
    if np.all(coefficients[:, 6] == 0.0) and np.all(coefficients[:, 5] >= 1.0 - 1e-9):
        _forward_kernel_by_rows(volume, offsets, coefficients, stretched)
    else:
        _forward_kernel(volume, offsets, coefficients, stretched, int(block_rows))
    rows = np.zeros(rows_shape, dtype=np.float32)
    _stretch_transpose(stretched, coefficients[:, 1].copy(), offsets, rows)
    return rows


def _check(rows, coefficients, weights):
    rows = np.asarray(rows)
    if rows.ndim != 3 or rows.dtype != np.float32 or not rows.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous float32 array [v, tilt, u]")
    coefficients = np.ascontiguousarray(coefficients, dtype=np.float64)
    if coefficients.shape != (rows.shape[1], N_COEFFICIENTS):
        raise ValueError(f"coefficients shape {coefficients.shape} != ({rows.shape[1]}, 7)")
    weights = np.ones(rows.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (rows.shape[1],):
        raise ValueError(f"weights shape {weights.shape} != ({rows.shape[1]},)")
    return rows, coefficients, weights
