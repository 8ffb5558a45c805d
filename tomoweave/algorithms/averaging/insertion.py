"""Central-slice insertion: 2D spectra of tilt images into a 3D Fourier box.

A tilt image whose projection matrix has rotation R samples the tomogram's spectrum on the
plane ``k = Rᵀ (qx, qy, 0)`` (central-slice theorem). Each 2D sample is spread over the eight
3D voxels around its position with trilinear weights w; the sums

    data = Σ w h X,   weight = Σ w h²,   multiplicity = Σ w

keep the model ``data = weight · S`` for slices X = h S + noise with transfer h
(fourier.tilt_transfers). Grids here are full and centred: index box // 2 is the zero
frequency on every axis; (:func:`to_rfft_data`, fourier.rfft_from_centred_grid) give the rfftn
layout of ParticleImages.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _insert(slices, transfers, rotations, data, weight, multiplicity):  # pragma: no cover
    count, box, _ = transfers.shape
    centre = box // 2
    limit = (box // 2) ** 2
    for t in range(count):
        r = rotations[t]
        for iy in range(box):
            qy = iy - centre
            for ix in range(box):
                qx = ix - centre
                if qx * qx + qy * qy >= limit:
                    continue
                h = transfers[t, iy, ix]
                value = slices[t, iy, ix] * h
                kx = r[0, 0] * qx + r[1, 0] * qy + centre
                ky = r[0, 1] * qx + r[1, 1] * qy + centre
                kz = r[0, 2] * qx + r[1, 2] * qy + centre
                x0, y0, z0 = int(np.floor(kx)), int(np.floor(ky)), int(np.floor(kz))
                fx, fy, fz = kx - x0, ky - y0, kz - z0
                for dz in range(2):
                    z = z0 + dz
                    if z < 0 or z >= box:
                        continue
                    wz = fz if dz else 1.0 - fz
                    for dy in range(2):
                        y = y0 + dy
                        if y < 0 or y >= box:
                            continue
                        wy = fy if dy else 1.0 - fy
                        for dx in range(2):
                            x = x0 + dx
                            if x < 0 or x >= box:
                                continue
                            w = wz * wy * (fx if dx else 1.0 - fx)
                            data[z, y, x] += w * value
                            weight[z, y, x] += w * h * h
                            multiplicity[z, y, x] += w


def insert_slices(slices: np.ndarray | None, transfers: np.ndarray, rotations: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert T central slices into a box³ Fourier grid (full, centred).

    Parameters
    ----------
    slices : (T, B, B) complex, or None
        Centred 2D spectra of the tilt patches (zero frequency at B // 2), origin of the
        patch at its index B // 2. None inserts ones: ``data`` is then Σ w h (the transfer's
        own 3D model).
    transfers : (T, B, B) float
        h_t on the same grid (:func:`tomoweave.algorithms.fourier.tilt_transfers`).
    rotations : (T, 3, 3)
        Rotation part of each tilt's projection matrix (geometry.particle_in_tilts).

    Returns
    -------
    data : (B, B, B) complex64, Σ w h X;  weight : (B, B, B) float32, Σ w h²;
    multiplicity : (B, B, B) float32, Σ w. All [kz, ky, kx], centred. Frequencies beyond
    B // 2 (the Nyquist circle) are not inserted.
    """
    transfers = np.ascontiguousarray(transfers, dtype=np.float32)
    count, box, width = transfers.shape
    if box != width:
        raise ValueError(f"transfers {transfers.shape}: expected (T, B, B)")
    if slices is None:
        slices = np.ones(transfers.shape, dtype=np.complex64)
    slices = np.ascontiguousarray(slices, dtype=np.complex64)
    rotations = np.ascontiguousarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    if slices.shape != transfers.shape or len(rotations) != count:
        raise ValueError(f"slices {slices.shape}, transfers {transfers.shape} and "
                         f"{len(rotations)} rotations disagree")
    data = np.zeros((box,) * 3, dtype=np.complex64)
    weight = np.zeros((box,) * 3, dtype=np.float32)
    multiplicity = np.zeros((box,) * 3, dtype=np.float32)
    _insert(slices, transfers, rotations, data, weight, multiplicity)
    return data, weight, multiplicity


def to_rfft_data(centred: np.ndarray) -> np.ndarray:
    """rfftn layout (B, B, B//2+1) of a centred spectrum of an object centred at the origin,
    as the spectrum of a box that holds it at index B // 2 (what ParticleImages stores)."""
    box = centred.shape[0]
    unshifted = np.fft.ifftshift(centred)
    index = np.arange(box)
    # moving the object from the origin to index B // 2 multiplies by exp(-iπ k) per axis
    # (even B), i.e. (-1)^(kx + ky + kz); for odd B the general phase ramp
    ramp = np.exp(-2j * np.pi * np.fft.fftfreq(box) * (box // 2))
    if box % 2 == 0:
        ramp = np.where(index % 2, -1.0, 1.0)
    half = box // 2 + 1
    phase = ramp[:, None, None] * ramp[None, :, None] * ramp[None, None, :half]
    return (unshifted[:, :, :half] * phase).astype(np.complex64)
