"""Gold beads among protein-like blobs: a phantom tomoweave's simulator did not make.

Beads are solid spheres (their projection is the chord length, the same disc in every tilt).
Blobs are clusters of anisotropic 3D Gaussians; a 3D Gaussian of covariance C at X projects
exactly to a 2D Gaussian of covariance ``P C P^T`` at ``P X`` (P: the 2×3 rows of the
projection), so their projections change shape with the tilt like real, non-spherical density.
Nothing here uses tomoweave.sim; geometry is tomoweave.geometry.projection_matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from test_align_phantom import _draw_sphere

from tomoweave.geometry import project_points_a, projection_matrix
from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z


@dataclass
class BlobPhantom:
    stack: np.ndarray  # (T, Y, X) float32, beads dark (or light when inverted)
    tilts_deg: np.ndarray  # nominal = true tilt angles
    z_rot_deg: float
    shifts_px: np.ndarray  # (T, 2) true
    beads_px: np.ndarray  # (B, 3)
    blobs_px: np.ndarray  # (N, 3) blob centres
    bead_diameter_px: float

    def matrix(self, i: int) -> np.ndarray:
        return projection_matrix(self.tilts_deg[i], 0.0, self.z_rot_deg, *self.shifts_px[i])

    def scaled_rotations(self) -> np.ndarray:
        return np.stack([self.matrix(i)[:2, :3] for i in range(len(self.tilts_deg))])

    def inverted(self) -> BlobPhantom:
        """The same series with inverted contrast (light beads)."""
        return BlobPhantom(-self.stack, self.tilts_deg, self.z_rot_deg, self.shifts_px,
                           self.beads_px, self.blobs_px, self.bead_diameter_px)


def _draw_gaussian(image: np.ndarray, centre_xy: np.ndarray, cov: np.ndarray, mass: float):
    """Add a 2D Gaussian of total ``mass`` and covariance ``cov`` (px²) centred at ``centre_xy``
    (pixel indices), sampled at pixel centres."""
    half = int(np.ceil(4 * np.sqrt(np.max(np.linalg.eigvalsh(cov))))) + 1
    cx, cy = centre_xy
    x_lo, x_hi = max(0, int(cx) - half), min(image.shape[1], int(cx) + half + 2)
    y_lo, y_hi = max(0, int(cy) - half), min(image.shape[0], int(cy) + half + 2)
    if x_lo >= x_hi or y_lo >= y_hi:
        return
    dx = np.arange(x_lo, x_hi)[None, :] - cx
    dy = np.arange(y_lo, y_hi)[:, None] - cy
    inv = np.linalg.inv(cov)
    q = inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2
    norm = mass / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    image[y_lo:y_hi, x_lo:x_hi] += norm * np.exp(-0.5 * q)


def make_blob_phantom(
    *,
    size: int = 256,
    tilts_deg: np.ndarray | None = None,
    z_rot_deg: float = 85.0,
    n_beads: int = 12,
    n_blobs: int = 60,
    bead_diameter_px: float = 8.0,
    blob_strength: tuple[float, float] = (0.3, 0.8),
    thickness_px: float = 60.0,
    shift_sigma_px: float = 6.0,
    noise_sigma: float = 0.0,
    seed: int = 0,
) -> BlobPhantom:
    """Tilt series of ``n_beads`` solid spheres and ``n_blobs`` protein-like blobs.

    Parameters
    ----------
    size : int
        Image side, px.
    bead_diameter_px : float
        Bead diameter, px; blobs have a similar overall size (radius of gyration 0.7-1.2 of the
        bead's).
    blob_strength : (float, float)
        Range of a blob's projected mass relative to a bead's.
    noise_sigma : float
        Gaussian noise per pixel, in units of a bead's central darkness.
    """
    rng = np.random.default_rng(seed)
    tilts = np.arange(-60.0, 60.1, 3.0) if tilts_deg is None else np.asarray(tilts_deg, float)
    radius = bead_diameter_px / 2
    inner = 0.38 * size
    def positions(n):
        return np.column_stack([rng.uniform(-inner, inner, n), rng.uniform(-inner, inner, n),
                                rng.uniform(-thickness_px / 2, thickness_px / 2, n)])
    beads, blobs = positions(n_beads), positions(n_blobs)
    bead_mass = 4 / 3 * np.pi * radius**3
    # each blob: 2-4 anisotropic Gaussians around its centre
    parts = []
    for centre in blobs:
        mass = rng.uniform(*blob_strength) * bead_mass
        count = rng.integers(2, 5)
        for _ in range(count):
            sig = radius * rng.uniform(0.3, 0.7, 3)
            turn = (rotation_z(rng.uniform(0, 360)) @ rotation_y(rng.uniform(0, 180))
                    @ rotation_x(rng.uniform(0, 360)))
            offset = rng.normal(0, 0.6 * radius, 3)
            parts.append((centre + offset, turn @ np.diag(sig**2) @ turn.T, mass / count))
    shifts = rng.normal(0.0, shift_sigma_px, (len(tilts), 2))
    phantom = BlobPhantom(np.zeros((len(tilts), size, size), np.float32), tilts, z_rot_deg,
                          shifts, beads, blobs, bead_diameter_px)
    centre = size // 2
    # the sphere helper draws the mean chord / diameter: scale to projected density
    for i in range(len(tilts)):
        matrix = phantom.matrix(i)
        rows = matrix[:2, :3]
        image = np.zeros((size, size))
        for bead in project_points_a(matrix, beads) + centre:
            _draw_sphere(image, bead, radius, 2 * radius)  # density 1 inside the sphere
        for position, cov, mass in parts:
            xy = project_points_a(matrix, position[None])[0] + centre
            _draw_gaussian(image, xy, rows @ cov @ rows.T, mass)
        image /= 2 * radius  # a bead's centre darkness is 1
        if noise_sigma:
            image += rng.normal(0.0, noise_sigma, image.shape)
        phantom.stack[i] = -image.astype(np.float32)
    return phantom
