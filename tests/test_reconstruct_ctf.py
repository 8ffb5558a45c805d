"""CTF correction follows the simulator's convention: a point at height h (third row of the
projection matrix, Å, +z towards the source) is imaged at defocus ``defocus + h``. Images of
points are made with exactly that rule; the correction with the right sign must restore the
points better than with the opposite sign, and 3D correction better than strips alone for a point
far above the centre plane."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms import reconstruction
from tomoweave.algorithms.ctf_model import ctf_2d
from tomoweave.geometry import project_points_a, projection_matrix

PIXEL_A, NX, NY, NZ = 2.0, 512, 16, 200
DEFOCUS_A = 20000.0


TILTS_DEG = np.arange(-60, 61, 5.0)


def images_of(point_a: np.ndarray, matrices: np.ndarray, with_ctf: bool = True) -> list:
    yy, xx = np.mgrid[0:NY, 0:NX]
    images = []
    for matrix in matrices:
        x_px, y_px = project_points_a(matrix, point_a)[0] / PIXEL_A + np.array([NX, NY]) // 2
        height_a = float(matrix[2, :3] @ point_a)
        spot = np.exp(-((xx - x_px) ** 2 + (yy - y_px) ** 2) / 0.5)
        ctf = ctf_2d((NY, NX), PIXEL_A, DEFOCUS_A + height_a, DEFOCUS_A + height_a, rfft=True)
        ctf = ctf if with_ctf else -np.ones_like(ctf)  # ideal: dark, no CTF
        images.append(scipy.fft.irfft2(scipy.fft.rfft2(spot) * ctf, s=(NY, NX)).astype(np.float32))
    return images


def fidelity(point_a: np.ndarray, mode: str, sign: float, monkeypatch) -> float:
    """Correlation, within ±4 voxels of the point, of the CTF-corrected reconstruction with the
    reconstruction of CTF-free images: 1 when the correction restores the point exactly."""
    matrices = np.stack([projection_matrix(t) for t in TILTS_DEG])
    n = len(matrices)
    ctf = reconstruction.CtfSettings([DEFOCUS_A] * n, [DEFOCUS_A] * n, [0.0] * n,
                                     defocus_step_a=60.0)
    geometry = reconstruction.make_geometry(matrices, (NY, NX), PIXEL_A, NZ * PIXEL_A)
    monkeypatch.setattr(reconstruction, "DEFOCUS_PER_HEIGHT", sign)
    images = images_of(point_a, matrices)
    corrected = reconstruction.reconstruct_wbp(lambda i: images[i], geometry, "ramp", ctf, mode)
    ideal_images = images_of(point_a, matrices, with_ctf=False)
    ideal = reconstruction.reconstruct_wbp(lambda i: ideal_images[i], geometry)
    z, y, x = np.round(point_a[::-1] / PIXEL_A + np.array(ideal.shape) // 2).astype(int)
    window = (slice(z - 4, z + 5), slice(max(0, y - 4), y + 5), slice(x - 4, x + 5))
    return float(np.corrcoef(corrected[window].ravel(), ideal[window].ravel())[0, 1])


def test_strip_phase_flip_uses_the_simulators_defocus_gradient(monkeypatch):
    point_a = np.array([360.0, 0.0, 0.0])  # far from the tilt axis: large defocus gradient
    right = fidelity(point_a, "phase_flip", 1.0, monkeypatch)
    wrong = fidelity(point_a, "phase_flip", -1.0, monkeypatch)
    flat = fidelity(point_a, "none", 1.0, monkeypatch)
    print(f"right sign {right:.4f}, wrong sign {wrong:.4f}, uncorrected {flat:.4f}")
    assert right > 0.99 and right > wrong + 0.05 and right > flat + 0.5


def test_3d_correction_beats_strips_for_a_point_off_the_centre_plane(monkeypatch):
    point_a = np.array([0.0, 0.0, 160.0])
    strips = fidelity(point_a, "phase_flip", 1.0, monkeypatch)
    per_height = fidelity(point_a, "3d", 1.0, monkeypatch)
    wrong = fidelity(point_a, "3d", -1.0, monkeypatch)
    print(f"3d {per_height:.4f}, strips {strips:.4f}, 3d wrong sign {wrong:.4f}")
    assert per_height > 0.99 and per_height > strips + 0.005 and per_height > wrong + 0.01


def test_ctf_mode_needs_ctf_values():
    geometry = reconstruction.make_geometry(projection_matrix(0.0)[None], (8, 8), 1.0, 4.0)
    with pytest.raises(ValueError, match="needs per-tilt CTF"):
        reconstruction.reconstruct_wbp(lambda i: np.zeros((8, 8), np.float32), geometry,
                                        ctf_mode="phase_flip")
