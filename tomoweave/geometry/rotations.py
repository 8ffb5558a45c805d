"""Rotation matrices: right-handed, active, angles in degrees at the interface.

A rotation matrix ``R`` (3×3) acts on column vectors ``[x, y, z]``: ``p' = R @ p``.
"""

from __future__ import annotations

import numpy as np


def rotation_x(angle_deg: float) -> np.ndarray:
    """Active right-handed rotation about X by ``angle_deg`` degrees, shape (3, 3)."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle_deg: float) -> np.ndarray:
    """Active right-handed rotation about Y by ``angle_deg`` degrees, shape (3, 3)."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(angle_deg: float) -> np.ndarray:
    """Active right-handed rotation about Z by ``angle_deg`` degrees, shape (3, 3)."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_angle_between_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    """Geodesic angle in degrees between two rotation matrices (0 … 180)."""
    relative = np.asarray(rotation_a).T @ np.asarray(rotation_b)
    cos_angle = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos_angle)))


def random_rotations(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rotations uniform on SO(3) (from random unit quaternions), shape (count, 3, 3)."""
    quaternions = rng.normal(size=(count, 4))
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    w, x, y, z = quaternions.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def is_rotation_matrix(matrix: np.ndarray, tolerance: float = 1e-5) -> bool:
    """True when ``matrix`` is orthonormal with determinant +1."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (3, 3):
        return False
    orthonormal = np.allclose(matrix.T @ matrix, np.eye(3), atol=tolerance)
    return bool(orthonormal and abs(np.linalg.det(matrix) - 1.0) < tolerance)
