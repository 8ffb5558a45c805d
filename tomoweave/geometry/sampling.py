"""Sampling of rotations (SO(3) grids) and distances between orientations.

Shared by template matching, subtomogram alignment and classification.
"""

from __future__ import annotations

import numpy as np

from tomoweave.geometry.rotations import rotation_y, rotation_z
from tomoweave.geometry.symmetry import parse_symmetry, symmetry_operators


def angular_sampling(step_deg: float, symmetry: str = "C1") -> np.ndarray:
    """Near-uniform rotations covering SO(3) (or its asymmetric unit) with ``step_deg`` spacing.

    A Hopf-fibration-like grid: directions of the reference Z axis on a Fibonacci sphere whose
    neighbour spacing is ``step_deg``, times in-plane rotations about that axis every
    ``step_deg``. C<n> restricts the in-plane range to 360/n, D<n> also the directions to the
    upper hemisphere.

    Returns
    -------
    rotations : array, shape (N, 3, 3), float64
        Active rotations R = Rz(phi) @ Ry(theta) @ Rz(psi).
    """
    if not 0.5 <= step_deg <= 90:
        raise ValueError(f"angular_step_deg {step_deg}: expected 0.5 … 90 degrees")
    kind, order = parse_symmetry(symmetry)
    step = np.radians(step_deg)
    # hexagonal packing: area per point (sqrt(3)/2) * step^2 over the sphere's 4 pi
    n_dirs = max(2, int(np.ceil(8 * np.pi / (np.sqrt(3) * step**2))))
    k = np.arange(n_dirs) + 0.5
    cos_theta = 1 - 2 * k / n_dirs
    phi = np.pi * (1 + 5**0.5) * k
    if kind == "D":
        keep = cos_theta >= 0
        cos_theta, phi = cos_theta[keep], phi[keep]
    psi_range = 360.0 / order if kind in ("C", "D") else 360.0
    n_psi = max(1, int(np.ceil(psi_range / step_deg - 1e-9)))
    psi_deg = np.arange(n_psi) * psi_range / n_psi
    theta_deg = np.degrees(np.arccos(np.clip(cos_theta, -1, 1)))
    rotations = [
        rotation_z(np.degrees(p)) @ rotation_y(t) @ rotation_z(s)
        for p, t in zip(phi, theta_deg, strict=True) for s in psi_deg
    ]
    return np.stack(rotations)


def orientation_error_deg(rotation_a: np.ndarray, rotation_b: np.ndarray,
                          symmetry: str = "C1") -> float:
    """Smallest geodesic angle between two rotations over the reference's symmetry, degrees."""
    best = 180.0
    for op in symmetry_operators(symmetry):
        relative = np.asarray(rotation_a).T @ np.asarray(rotation_b) @ op
        cos_angle = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
        best = min(best, float(np.degrees(np.arccos(cos_angle))))
    return best
