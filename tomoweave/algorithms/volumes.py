"""Real-space operations on volumes: rotation about the centre, masks, cropping, rescaling.

Volumes are float32 [z, y, x] with their centre at index N // 2 on every axis; rotations are
3×3 active matrices in (x, y, z) (tomoweave.geometry's convention).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

_FLIP = np.eye(3)[::-1]  # (x, y, z) <-> array (z, y, x)


def rotate_volume(volume: np.ndarray, rotation: np.ndarray, order: int = 3,
                  prefiltered: bool = False) -> np.ndarray:
    """Rotate a volume about its centre (index N // 2) by the active rotation (x, y, z).

    ``order`` 1 uses a parallel numba trilinear rotator (fast, for the search); 3 uses cubic
    splines (``prefiltered``: the volume already holds ndimage.spline_filter coefficients).
    """
    matrix = _FLIP @ np.asarray(rotation, dtype=float).T @ _FLIP
    centre = np.asarray(volume.shape, dtype=float) // 2
    offset = centre - matrix @ centre
    if order == 1:
        out = np.empty(volume.shape, dtype=np.float32)
        _rotate_linear(np.ascontiguousarray(volume, dtype=np.float32), matrix, offset, out)
        return out
    return ndimage.affine_transform(volume, matrix, offset=offset, order=order, mode="constant",
                                    cval=0.0, prefilter=not prefiltered).astype(np.float32)


# Serial on purpose: these kernels run between multi-threaded FFTs, and numba's OpenMP workers
# spin-wait after a parallel region, which measured 3-5x slower on 2 cores than a serial loop.
# nogil: template matching rotates templates in several threads at once.
@numba.njit(cache=True, nogil=True)
def _rotate_linear(volume, matrix, offset, out):  # pragma: no cover - numba
    nz, ny, nx = volume.shape
    for z in range(out.shape[0]):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                sz = matrix[0, 0] * z + matrix[0, 1] * y + matrix[0, 2] * x + offset[0]
                sy = matrix[1, 0] * z + matrix[1, 1] * y + matrix[1, 2] * x + offset[1]
                sx = matrix[2, 0] * z + matrix[2, 1] * y + matrix[2, 2] * x + offset[2]
                z0, y0, x0 = int(np.floor(sz)), int(np.floor(sy)), int(np.floor(sx))
                value = 0.0
                if 0 <= z0 < nz - 1 and 0 <= y0 < ny - 1 and 0 <= x0 < nx - 1:
                    fz, fy, fx = sz - z0, sy - y0, sx - x0
                    for dz in range(2):
                        wz = fz if dz else 1.0 - fz
                        for dy in range(2):
                            wy = fy if dy else 1.0 - fy
                            for dx in range(2):
                                wx = fx if dx else 1.0 - fx
                                value += wz * wy * wx * volume[z0 + dz, y0 + dy, x0 + dx]
                out[z, y, x] = value


def spherical_mask(box_px: int, radius_px: float, soft_px: float = 2.0) -> np.ndarray:
    """Sphere of ``radius_px`` centred at index box // 2 with a raised-cosine edge, float32."""
    grid = np.indices((box_px,) * 3, dtype=np.float32) - box_px // 2
    radius = np.sqrt((grid**2).sum(axis=0))
    ramp = np.clip((radius - radius_px) / max(soft_px, 1e-3), 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * ramp))).astype(np.float32)


def crop_or_pad(volume: np.ndarray, box_px: int) -> np.ndarray:
    """Centre-crop or zero-pad a cubic volume to ``box_px`` keeping index N // 2 at the centre."""
    out = np.zeros((box_px,) * 3, dtype=np.float32)
    size = volume.shape[0]
    src_lo = max(0, size // 2 - box_px // 2)
    dst_lo = max(0, box_px // 2 - size // 2)
    n = min(size - src_lo, box_px - dst_lo)
    out[dst_lo:dst_lo + n, dst_lo:dst_lo + n, dst_lo:dst_lo + n] = volume[
        src_lo:src_lo + n, src_lo:src_lo + n, src_lo:src_lo + n]
    return out


def rescale_volume(volume: np.ndarray, from_pixel_a: float, to_pixel_a: float) -> np.ndarray:
    """Resample a volume from one pixel size to another (cubic spline), keeping the centre."""
    factor = from_pixel_a / to_pixel_a
    if abs(factor - 1.0) < 1e-4:
        return volume.astype(np.float32)
    new_size = max(4, int(round(volume.shape[0] * factor)))
    centre_in = volume.shape[0] // 2
    centre_out = new_size // 2
    scale = 1.0 / factor
    offset = centre_in - scale * centre_out
    out = ndimage.affine_transform(volume.astype(np.float32), np.full(3, scale), offset=offset,
                                   output_shape=(new_size,) * 3, order=3, mode="constant")
    return out.astype(np.float32)


def soft_mask_from_map(volume: np.ndarray, threshold: float, *, dilation_px: float = 3.0,
                       soft_px: float = 4.0, min_region_fraction: float = 0.0) -> np.ndarray:
    """A soft solvent mask from a map: threshold, grow, raised-cosine edge (RELION's recipe).

    Parameters
    ----------
    volume : array (z, y, x)
        The map, e.g. an average low-passed to about 15-20 Å.
    threshold : float
        Density above which a voxel counts as protein.
    dilation_px : float
        Distance (pixels) by which the thresholded region grows at full weight.
    soft_px : float
        Width (pixels) of the raised-cosine edge beyond the grown region.
    min_region_fraction : float
        Drop connected regions above the threshold smaller than this fraction of the largest
        one (noise specks); 0 keeps every region, 1 only the largest.

    Returns
    -------
    mask : float32 array of the volume's shape, 1 inside, 0 outside, smooth in between.
    """
    inside = np.asarray(volume) > threshold
    if not inside.any():
        raise ValueError(f"soft_mask_from_map: no voxel above the threshold {threshold:g} "
                         f"(map range {float(np.min(volume)):g} … {float(np.max(volume)):g})")
    if min_region_fraction > 0:
        labels, count = ndimage.label(inside)
        if count > 1:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            keep = sizes >= min_region_fraction * sizes.max()
            inside = keep[labels]
    distance = ndimage.distance_transform_edt(~inside)
    ramp = np.clip((distance - dilation_px) / max(soft_px, 1e-3), 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * ramp))).astype(np.float32)
