"""Ray-driven projection of a volume through a 4×4 projection matrix, split by height.

For each image pixel the ray along the image-frame z axis is mapped back into the volume with the
inverse of the projection matrix and sampled every voxel-length with trilinear interpolation. The
line integral is accumulated into height slabs (image-frame z, i.e. distance along the beam) so
that each slab can later receive the CTF of its own defocus.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage


@numba.njit(cache=True, inline="always")
def _trilinear(volume, x, y, z):
    ix = int(np.floor(x))
    iy = int(np.floor(y))
    iz = int(np.floor(z))
    fx = x - ix
    fy = y - iy
    fz = z - iz
    c00 = volume[iz, iy, ix] * (1 - fx) + volume[iz, iy, ix + 1] * fx
    c01 = volume[iz, iy + 1, ix] * (1 - fx) + volume[iz, iy + 1, ix + 1] * fx
    c10 = volume[iz + 1, iy, ix] * (1 - fx) + volume[iz + 1, iy, ix + 1] * fx
    c11 = volume[iz + 1, iy + 1, ix] * (1 - fx) + volume[iz + 1, iy + 1, ix + 1] * fx
    c0 = c00 * (1 - fy) + c01 * fy
    c1 = c10 * (1 - fy) + c11 * fy
    return c0 * (1 - fz) + c1 * fz


@numba.njit(cache=True, inline="always")
def _clip_interval(base, direction, upper, t_low, t_high):
    """Narrow [t_low, t_high] to where base + t * direction lies inside [0, upper]."""
    if abs(direction) < 1e-12:
        if base < 0.0 or base > upper:
            return 1.0, 0.0
        return t_low, t_high
    t0 = (0.0 - base) / direction
    t1 = (upper - base) / direction
    if t0 > t1:
        t0, t1 = t1, t0
    return max(t_low, t0), min(t_high, t1)


BLOCK_SHIFT = 2  # occupancy blocks of 4³ voxels


def occupancy_blocks(volume: np.ndarray) -> np.ndarray:
    """True for each 4³ block whose trilinear samples can be non-zero (any voxel of the block
    or of its one-voxel rim is non-zero), so the projector can skip empty space."""
    nonzero = ndimage.maximum_filter(volume != 0, size=3, mode="constant")
    block = 1 << BLOCK_SHIFT
    shape = [-(-n // block) * block for n in volume.shape]
    padded = np.zeros(shape, dtype=bool)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = nonzero
    blocks = padded.reshape(shape[0] // block, block, shape[1] // block, block,
                            shape[2] // block, block)
    return blocks.any(axis=(1, 3, 5))


@numba.njit(parallel=True, cache=True, fastmath=True)
def project_slabs_kernel(volume, occupied, inverse, shift_x_px, shift_y_px, out, z_first_px,
                         slab_px):
    """Accumulate line integrals (in voxel lengths) into ``out[slab, y, x]``.

    ``inverse`` (3×3) maps image-frame pixels (u, v, t) relative to the image centre, after the
    shift is removed, to volume pixels relative to the volume centre. Slab ``s`` holds samples
    with ``z_first_px + s * slab_px <= t < z_first_px + (s + 1) * slab_px``.
    """
    nz, ny, nx = volume.shape
    n_slabs, n_out_y, n_out_x = out.shape
    cx, cy, cz = nx // 2, ny // 2, nz // 2
    dx, dy, dz = inverse[0, 2], inverse[1, 2], inverse[2, 2]
    step = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)  # samples one voxel apart
    for iy in numba.prange(n_out_y):
        v = iy - n_out_y // 2 - shift_y_px
        for ix in range(n_out_x):
            u = ix - n_out_x // 2 - shift_x_px
            bx = inverse[0, 0] * u + inverse[0, 1] * v + cx
            by = inverse[1, 0] * u + inverse[1, 1] * v + cy
            bz = inverse[2, 0] * u + inverse[2, 1] * v + cz
            t_low, t_high = -1e30, 1e30
            t_low, t_high = _clip_interval(bx, dx, nx - 1.000001, t_low, t_high)
            t_low, t_high = _clip_interval(by, dy, ny - 1.000001, t_low, t_high)
            t_low, t_high = _clip_interval(bz, dz, nz - 1.000001, t_low, t_high)
            if t_high <= t_low:
                continue
            k = int(np.ceil(t_low / step))
            k_last = int(np.floor(t_high / step))
            while k <= k_last:
                t = k * step
                x = bx + t * dx
                y = by + t * dy
                z = bz + t * dz
                if x < 0 or y < 0 or z < 0:
                    k += 1
                    continue
                block_x = int(x) >> BLOCK_SHIFT
                block_y = int(y) >> BLOCK_SHIFT
                block_z = int(z) >> BLOCK_SHIFT
                if not occupied[block_z, block_y, block_x]:
                    # jump to the first sample past this empty block
                    t_exit = _block_exit(x, dx, block_x)
                    t_exit = min(t_exit, _block_exit(y, dy, block_y))
                    t_exit = min(t_exit, _block_exit(z, dz, block_z))
                    k = max(k + 1, int(np.ceil((t + t_exit) / step)))
                    continue
                value = _trilinear(volume, x, y, z)
                slab = int(np.floor((t - z_first_px) / slab_px))
                if slab < 0:
                    slab = 0
                elif slab >= n_slabs:
                    slab = n_slabs - 1
                out[slab, iy, ix] += value * step
                k += 1


@numba.njit(cache=True, inline="always")
def _block_exit(position, direction, block):
    """Ray parameter increment at which ``position`` leaves its block along one axis."""
    size = 1 << BLOCK_SHIFT
    if direction > 1e-12:
        return ((block + 1) * size - position) / direction
    if direction < -1e-12:
        return (block * size - position) / direction
    return 1e30


def slab_range_px(volume_shape_zyx: tuple[int, int, int], rotation: np.ndarray,
                  slab_px: float) -> tuple[float, int]:
    """First slab edge (image-frame z, px) and slab count covering the rotated volume."""
    nz, ny, nx = volume_shape_zyx
    corners = np.array([[x, y, z] for x in (-nx // 2, nx - nx // 2) for y in (-ny // 2, ny - ny // 2)
                        for z in (-nz // 2, nz - nz // 2)], dtype=float)
    heights = corners @ np.asarray(rotation)[2]
    z_first = float(np.floor(heights.min() / slab_px) * slab_px)
    count = int(np.ceil((heights.max() - z_first) / slab_px)) + 1
    return z_first, count


def project_volume_slabs(volume: np.ndarray, matrix: np.ndarray, pixel_size_a: float,
                         image_shape_yx: tuple[int, int], slab_a: float,
                         occupied: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Project ``volume`` ([z, y, x], centre N // 2) with a 4×4 tomogram-Å -> image-Å matrix.

    Returns
    -------
    slabs : float32 array, shape (n_slabs, ny, nx)
        Line integrals in Å × (volume units), split by height along the beam.
    heights_a : float64 array, shape (n_slabs,)
        Image-frame z at the middle of each slab, Å (z of the projection matrix's third row).

    ``occupied`` (from ``occupancy_blocks``) can be passed to reuse it across tilts.
    """
    matrix = np.asarray(matrix, dtype=float)
    linear = matrix[:3, :3]
    inverse = np.linalg.inv(linear)
    slab_px = max(slab_a / pixel_size_a, 1.0)
    z_first_px, count = slab_range_px(volume.shape, linear, slab_px)
    out = np.zeros((count, *image_shape_yx), dtype=np.float32)
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if occupied is None:
        occupied = occupancy_blocks(volume)
    project_slabs_kernel(volume, occupied, inverse,
                         matrix[0, 3] / pixel_size_a, matrix[1, 3] / pixel_size_a, out,
                         z_first_px, slab_px)
    out *= np.float32(pixel_size_a)
    heights_a = (z_first_px + (np.arange(count) + 0.5) * slab_px) * pixel_size_a
    return out, heights_a
