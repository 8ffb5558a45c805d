"""The tilt-series projection model (RELION 5's parameterisation).

Per tilt, an alignment is ``x_tilt_deg``, ``y_tilt_deg`` (the tilt angle), ``z_rot_deg`` (in-plane
rotation; for RELION 5 and SerialEM data it equals the tilt-axis angle), ``shift_x_a``,
``shift_y_a`` and an optional ``magnification``. They make one 4×4 matrix per tilt that maps a
point of the tomogram, in Å from the tomogram centre, to the tilt image, in Å from the image
centre (index N // 2):

    P = T(shift_x_a, shift_y_a) @ magnification @ Rz(z_rot) @ Ry(y_tilt) @ Rx(x_tilt)

so the specimen is first tilted about X (small), then about Y (the tilt), then rotated in plane,
scaled, and shifted. Every reprojection, reconstruction and converter goes through this matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z


def projection_matrix(
    y_tilt_deg: float,
    x_tilt_deg: float = 0.0,
    z_rot_deg: float = 0.0,
    shift_x_a: float = 0.0,
    shift_y_a: float = 0.0,
    magnification: float = 1.0,
) -> np.ndarray:
    """4×4 matrix from tomogram Å (centred) to image Å (centred) for one tilt."""
    rotation = rotation_z(z_rot_deg) @ rotation_y(y_tilt_deg) @ rotation_x(x_tilt_deg)
    matrix = np.eye(4)
    matrix[:3, :3] = float(magnification) * rotation
    matrix[0, 3] = shift_x_a
    matrix[1, 3] = shift_y_a
    return matrix


def projection_matrices(alignments: Sequence) -> np.ndarray:
    """Stack of projection matrices, shape (T, 4, 4), from objects with the alignment fields."""
    return np.stack(
        [
            projection_matrix(
                a.y_tilt_deg, a.x_tilt_deg, a.z_rot_deg, a.shift_x_a, a.shift_y_a, a.magnification
            )
            for a in alignments
        ]
    )


def project_points_a(matrix: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Project 3D points (N, 3) in Å from the tomogram centre to 2D image Å (N, 2)."""
    points_a = np.atleast_2d(np.asarray(points_a, dtype=float))
    homogeneous = np.concatenate([points_a, np.ones((len(points_a), 1))], axis=1)
    return (homogeneous @ np.asarray(matrix).T)[:, :2]


def tilt_axis_to_z_rot_deg(tilt_axis_deg: float) -> float:
    """In-plane rotation of the projection model for a tilt-axis angle as SerialEM reports it.

    RELION 5 initialises rlnTomoZRot with the nominal tilt-axis angle of the mdoc, and so do we:
    the specimen's Y (tilt) axis then appears in the image rotated by this angle.
    """
    return float(tilt_axis_deg)


def particle_in_tilts(matrices: np.ndarray, position_a: np.ndarray) -> tuple[np.ndarray, ...]:
    """Where one point of the tomogram is seen in every tilt.

    Parameters
    ----------
    matrices : (T, 4, 4)
        Projection matrices (tomogram Å -> image Å), :func:`projection_matrices`.
    position_a : (3,)
        The point, Å from the tomogram centre (x, y, z).

    Returns
    -------
    image_a : (T, 2)
        Its position in each tilt image, Å from the image centre (x, y).
    height_a : (T,)
        Its height along the beam (third row of the matrix, +z towards the source): the point
        is at defocus ``defocus at the tilt axis + height_a`` (underfocus positive).
    rotations : (T, 3, 3)
        The rotation part of each matrix (magnification divided out): image frequency (qx, qy)
        is the tomogram frequency ``rotations[t].T @ (qx, qy, 0)`` (central-slice theorem).
    """
    matrices = np.asarray(matrices, dtype=float).reshape(-1, 4, 4)
    point = np.append(np.asarray(position_a, dtype=float), 1.0)
    mapped = matrices @ point
    linear = matrices[:, :3, :3]
    scale = np.cbrt(np.linalg.det(linear))[:, None, None]
    rotations = linear / scale
    return mapped[:, :2], mapped[:, 2] / scale[:, 0, 0], rotations
