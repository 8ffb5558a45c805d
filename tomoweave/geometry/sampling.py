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
    upper hemisphere; T, O and I keep the rotations nearer the identity than any of their
    symmetry mates (the Voronoi cell of the identity: an asymmetric unit, 1/|G| of SO(3)).

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
    rotations = np.stack([
        rotation_z(np.degrees(p)) @ rotation_y(t) @ rotation_z(s)
        for p, t in zip(phi, theta_deg, strict=True) for s in psi_deg
    ])
    if kind in ("C", "D"):
        return rotations
    return asymmetric_unit(rotations, symmetry)


def asymmetric_unit(rotations: np.ndarray, symmetry: str) -> np.ndarray:
    """The rotations that lie nearer the identity than any of their mates ``R @ op``.

    Of each set of equivalent rotations one (almost always exactly one) is kept, so a uniform
    grid over SO(3) becomes a uniform grid over one asymmetric unit.
    """
    operators = symmetry_operators(symmetry)
    # trace(R @ op) grows as the rotation angle of R @ op shrinks
    traces = np.einsum("nij,gji->ng", np.asarray(rotations), operators)
    keep = traces[:, 0] >= traces.max(axis=1) - 1e-9
    return np.asarray(rotations)[keep]


def local_sampling(step_deg: float, range_deg: float) -> np.ndarray:
    """Rotations within ``range_deg`` of the identity, about ``step_deg`` apart, (N, 3, 3).

    A cubic lattice of rotation vectors (axis × angle) inside a ball: near the identity the
    rotation-vector map is almost an isometry, so the points are near-uniform. The identity
    comes first. Compose with a prior ``R0`` as ``R0 @ local`` to search around it.
    """
    if not 0.05 <= step_deg <= 90 or range_deg < 0:
        raise ValueError(f"local sampling step {step_deg}°, range {range_deg}°: expected a step "
                         "of 0.05 … 90° and a range ≥ 0°")
    n = int(np.floor(range_deg / step_deg + 1e-9))
    axis = np.arange(-n, n + 1) * step_deg
    vectors = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    vectors = vectors[np.linalg.norm(vectors, axis=1) <= range_deg + 1e-9]
    vectors = vectors[np.argsort(np.linalg.norm(vectors, axis=1), kind="stable")]
    return rotations_from_vectors_deg(vectors)


def rotations_from_vectors_deg(vectors_deg: np.ndarray) -> np.ndarray:
    """Rotation matrices from rotation vectors (axis × angle in degrees), (N, 3) -> (N, 3, 3)."""
    vectors = np.radians(np.asarray(vectors_deg, dtype=float).reshape(-1, 3))
    angles = np.linalg.norm(vectors, axis=1)
    axes = vectors / np.maximum(angles, 1e-300)[:, None]
    cross = np.zeros((len(vectors), 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    cross -= cross.transpose(0, 2, 1)
    sin, cos = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    return np.eye(3) + sin * cross + (1 - cos) * cross @ cross


def orientation_error_deg(rotation_a: np.ndarray, rotation_b: np.ndarray,
                          symmetry: str = "C1") -> float:
    """Smallest geodesic angle between two rotations over the reference's symmetry, degrees."""
    return float(orientation_errors_deg(rotation_a, rotation_b, symmetry).reshape(-1)[0])


def orientation_errors_deg(rotations_a: np.ndarray, rotations_b: np.ndarray,
                           symmetry: str = "C1") -> np.ndarray:
    """Vectorised :func:`orientation_error_deg` over pairs, (N, 3, 3) × (N, 3, 3) -> (N,)."""
    a = np.asarray(rotations_a, dtype=float).reshape(-1, 3, 3)
    b = np.asarray(rotations_b, dtype=float).reshape(-1, 3, 3)
    relative = np.einsum("nji,njk->nik", a, b)
    traces = np.einsum("nij,gji->ng", relative, symmetry_operators(symmetry)).max(axis=1)
    return np.degrees(np.arccos(np.clip((traces - 1.0) / 2.0, -1.0, 1.0)))
