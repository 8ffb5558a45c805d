"""Subtomogram extraction with sub-voxel accuracy, binning, and missing-wedge / CTF weights.

Positions are Å from the tomogram centre (x, y, z); the voxel of a position is
``position_a / pixel_size_a + N // 2`` on each axis (tomoweave.geometry), so the same particle
list serves tomograms of any binning. A box of B voxels holds the particle centre at index
B // 2. Sub-voxel offsets are applied by cubic-spline interpolation of a local crop; binning
crops the Fourier transform of the extracted box (no aliasing).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tomoweave.algorithms.fourier import centred_grid_from_rfft, fourier_crop, wedge_ctf_weight


def position_to_voxel(positions_a: np.ndarray, shape_zyx: tuple[int, int, int],
                      pixel_size_a: float) -> np.ndarray:
    """Voxel coordinates (x, y, z), fractional, of positions in Å from the volume centre."""
    positions = np.asarray(positions_a, dtype=float).reshape(-1, 3)
    return positions / pixel_size_a + np.array(shape_zyx[::-1]) // 2


def extract_subvolume(volume: np.ndarray, centre_xyz_px: np.ndarray, box_px: int,
                      fill: float | None = None) -> np.ndarray:
    """A box of ``box_px`` voxels whose index box // 2 sits exactly at ``centre_xyz_px``.

    Parameters
    ----------
    volume : array (Z, Y, X) (a memory map works: only a local crop is read)
    centre_xyz_px : (3,) float
        Centre in voxel coordinates (x, y, z), fractional.
    fill : float, optional
        Value outside the volume (default: the mean of the crop).
    """
    centre_zyx = np.asarray(centre_xyz_px, dtype=float)[::-1]
    base = np.floor(centre_zyx).astype(int)
    frac = centre_zyx - base
    margin = 3  # spline support around the box
    low = base - box_px // 2 - margin
    size = box_px + 2 * margin + 1
    crop = np.empty((size,) * 3, dtype=np.float32)
    source, target = [], []
    for lo, n in zip(low, volume.shape, strict=True):
        s0, s1 = max(0, lo), min(n, lo + size)
        if s1 <= s0:
            raise ValueError(f"position {centre_xyz_px} lies outside the volume {volume.shape}")
        source.append(slice(s0, s1))
        target.append(slice(s0 - lo, s1 - lo))
    block = np.asarray(volume[tuple(source)], dtype=np.float32)
    crop.fill(float(block.mean()) if fill is None else fill)
    crop[tuple(target)] = block
    if np.allclose(frac, 0.0):
        return crop[margin:margin + box_px, margin:margin + box_px, margin:margin + box_px].copy()
    grid = np.indices((box_px,) * 3, dtype=float)
    coordinates = grid + (margin + frac)[:, None, None, None]
    return ndimage.map_coordinates(crop, coordinates, order=3, mode="nearest").astype(np.float32)


def normalise_box(box: np.ndarray, background_radius_px: float | None = None) -> np.ndarray:
    """Zero mean, unit std; over the background outside a sphere when a radius is given."""
    if background_radius_px is None:
        region = box
    else:
        grid = np.indices(box.shape) - box.shape[0] // 2
        outside = (grid**2).sum(axis=0) > background_radius_px**2
        region = box[outside] if outside.any() else box
    std = float(region.std())
    return ((box - float(region.mean())) / (std if std > 0 else 1.0)).astype(np.float32)


def extract_particles(volume: np.ndarray, pixel_size_a: float, positions_a: np.ndarray,
                      box_px: int, binning: float = 1.0, normalise: bool = True,
                      invert: bool = False) -> list[np.ndarray]:
    """Subtomograms of ``box_px`` voxels at pixel size ``pixel_size_a × binning``.

    Each box is cut at the tomogram's pixel size (``round(box_px × binning)`` voxels, even) and
    Fourier-cropped to ``box_px``. ``invert`` flips the contrast (dark protein -> bright);
    ``normalise`` sets the background outside a sphere of radius box/2 to zero mean, unit std.
    """
    if binning < 1:
        raise ValueError(f"binning {binning}: expected ≥ 1")
    source_box = int(round(box_px * binning))
    source_box += source_box % 2 if box_px % 2 == 0 else 0
    voxels = position_to_voxel(positions_a, volume.shape, pixel_size_a)
    boxes = []
    for voxel in voxels:
        box = extract_subvolume(volume, voxel, source_box)
        box = fourier_crop(box, box_px) if source_box != box_px else box
        if invert:
            box = -box
        if normalise:
            box = normalise_box(box, 0.5 * box_px - 1)
        boxes.append(box)
    return boxes


def weight_volume(box_px: int, pixel_size_a: float, tilt_range_deg: tuple[float, float] | None,
                  ctf: dict | None = None) -> np.ndarray:
    """Signed 3D CTF model C of a plain subtomogram (missing wedge × CTF), centred full grid.

    Index box // 2 on every axis is the zero frequency, as RELION 3.1's 3D CTF volumes; the
    averaging loader premultiplies the data by C and weights by C². ``ctf`` holds ``defocus_a``
    and optionally the microscope values of :func:`radial_ctf` and ``phase_flipped``.
    """
    weight = wedge_ctf_weight(box_px, pixel_size_a, tilt_range_deg, None, ctf)
    return centred_grid_from_rfft(weight, box_px)
