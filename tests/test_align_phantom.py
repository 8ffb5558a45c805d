"""A small exact phantom for the alignment tests (and a test that it obeys the projection model).

Spheres project to the same disc whatever the rotation, so a slab of Gaussian blobs and gold
beads (solid spheres) can be rendered exactly in every tilt from their projected centres, with
the projection model of tomoweave.geometry. Ground truth is known to machine precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tomoweave.geometry import project_points_a, projection_matrix


@dataclass
class Phantom:
    stack: np.ndarray  # (T, Y, X) float32
    tilts_deg: np.ndarray  # nominal
    y_tilt_deg: np.ndarray  # true
    z_rot_deg: float
    shifts_px: np.ndarray  # (T, 2) true
    magnification: np.ndarray
    beads_px: np.ndarray  # (B, 3) px from the tomogram centre
    bead_radius_px: float

    def matrix(self, i: int) -> np.ndarray:
        return projection_matrix(
            self.y_tilt_deg[i], 0.0, self.z_rot_deg, *self.shifts_px[i], self.magnification[i]
        )

    def scaled_rotations(self) -> np.ndarray:
        return np.stack([self.matrix(i)[:2, :3] for i in range(len(self.tilts_deg))])

    def bead_positions_px(self) -> np.ndarray:
        """(B, T, 2) true projected bead centres, px from the image centre."""
        return np.stack([project_points_a(self.matrix(i), self.beads_px)
                         for i in range(len(self.tilts_deg))], axis=1)


def _splat(image: np.ndarray, positions_px: np.ndarray, weights: np.ndarray) -> None:
    """Bilinear splatting of point weights at (x, y) pixel indices."""
    x, y = positions_px[:, 0], positions_px[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    ny, nx = image.shape
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
        np.add.at(image, (yi[inside], xi[inside]), (weights * w)[inside])


def _draw_sphere(image: np.ndarray, centre_px: np.ndarray, radius_px: float, amplitude: float):
    """Add the projection (chord length) of a solid sphere, supersampled 4× per pixel."""
    ny, nx = image.shape
    cx, cy = centre_px
    half = int(np.ceil(radius_px)) + 2
    x_lo, x_hi = max(0, int(cx) - half), min(nx, int(cx) + half + 1)
    y_lo, y_hi = max(0, int(cy) - half), min(ny, int(cy) + half + 1)
    if x_lo >= x_hi or y_lo >= y_hi:
        return
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    ys = np.arange(y_lo, y_hi)[:, None, None, None] + sub[None, None, :, None]
    xs = np.arange(x_lo, x_hi)[None, :, None, None] + sub[None, None, None, :]
    rho2 = (xs - cx) ** 2 + (ys - cy) ** 2
    chord = 2 * np.sqrt(np.clip(radius_px**2 - rho2, 0, None))
    image[y_lo:y_hi, x_lo:x_hi] += amplitude * chord.mean(axis=(2, 3)) / (2 * radius_px)


def make_phantom(
    size: int = 256,
    tilts_deg: np.ndarray | None = None,
    z_rot_deg: float = 85.0,
    tilt_offset_deg: float = 1.0,
    shift_sigma_px: float = 6.0,
    n_beads: int = 20,
    bead_radius_px: float = 3.0,
    thickness_px: float = 60.0,
    n_features: int = 6000,
    noise_sigma: float = 0.3,
    magnification_sigma: float = 0.0,
    seed: int = 0,
) -> Phantom:
    rng = np.random.default_rng(seed)
    tilts = np.arange(-60.0, 60.1, 3.0) if tilts_deg is None else np.asarray(tilts_deg, float)
    n_tilts = len(tilts)
    lateral = 0.75 * size
    features = np.column_stack([
        rng.uniform(-lateral, lateral, n_features), rng.uniform(-lateral, lateral, n_features),
        rng.uniform(-thickness_px / 2, thickness_px / 2, n_features)])
    feature_weights = rng.uniform(0.5, 1.5, n_features)
    inner = 0.4 * size
    beads = np.column_stack([
        rng.uniform(-inner, inner, n_beads), rng.uniform(-inner, inner, n_beads),
        np.where(np.arange(n_beads) % 2 == 0, 1, -1) * (thickness_px / 2 + bead_radius_px)])
    shifts = rng.normal(0.0, shift_sigma_px, (n_tilts, 2))
    magnification = 1.0 + rng.normal(0.0, magnification_sigma, n_tilts)
    magnification[np.argmin(np.abs(tilts))] = 1.0
    phantom = Phantom(np.zeros((n_tilts, size, size), np.float32), tilts, tilts + tilt_offset_deg,
                      z_rot_deg, shifts, magnification, beads, bead_radius_px)
    centre = size // 2
    for i in range(n_tilts):
        matrix = phantom.matrix(i)
        density = np.zeros((size, size))
        _splat(density, project_points_a(matrix, features) + centre, feature_weights)
        image = ndimage.gaussian_filter(density, 2.0 * magnification[i]) * 2.0
        for bead in project_points_a(matrix, beads) + centre:
            _draw_sphere(image, bead, bead_radius_px * magnification[i], 6.0)
        phantom.stack[i] = (-image + rng.normal(0.0, noise_sigma, image.shape)).astype(np.float32)
    return phantom


def test_phantom_beads_sit_where_the_model_projects_them():
    phantom = make_phantom(size=96, tilts_deg=np.array([-30.0, 0.0, 30.0]), n_beads=4,
                           n_features=0, noise_sigma=0.0, bead_radius_px=3.0)
    expected = phantom.bead_positions_px() + 96 // 2
    for i in range(3):
        dark = np.clip(-phantom.stack[i], 0, None)
        labels, count = ndimage.label(dark > 0.01)
        centres = np.array(ndimage.center_of_mass(dark, labels, range(1, count + 1)))[:, ::-1]
        for bead in expected[:, i]:
            if np.all((bead > 5) & (bead < 91)):
                assert np.min(np.linalg.norm(centres - bead, axis=1)) < 0.05
