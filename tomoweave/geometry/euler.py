"""Euler-angle conventions of other programs, converted to and from rotation matrices.

Inside tomoweave an orientation is a 3×3 active rotation matrix that turns the reference
(template, average) into the particle as it sits in the tomogram. Euler angles exist only here.
``Rz``, ``Ry``, ``Rx`` below are the active right-handed rotations of ``geometry.rotations``.

- RELION (rlnAngleRot, rlnAngleTilt, rlnAnglePsi): RELION's ``Euler_angles2matrix`` gives
  ``A = (Rz(rot) @ Ry(tilt) @ Rz(psi)).T``, and RELION rotates the reference *by A* to compare it
  with a particle (``Projector::project``/``rotate3D`` sample the reference at ``A⁻¹ k``). So our
  matrix is ``A`` itself. Check: RELION's projection direction ``(cos rot sin tilt,
  sin rot sin tilt, cos tilt)`` of the reference lands on +Z, the beam.
- Dynamo (tdrot, tilt, narot): ``Rz(narot) @ Rx(tilt) @ Rz(tdrot)`` (ZXZ read as extrinsic
  rotations) is the same matrix as RELION's ``Rz(rot) @ Ry(tilt) @ Rz(psi)`` for an equivalent
  pose — e.g. Dynamo (-47.273, 1.1777, -132.3) and RELION (137.7, 1.1777, 42.727) give identical
  reconstructions — so our matrix is its transpose, ``Rz(-tdrot) @ Rx(-tilt) @ Rz(-narot)``.
- EMAN2 (az, alt, phi): a ``Transform``'s matrix is ``E = Rz(-phi) @ Rx(-alt) @ Rz(-az)``. The
  angles of ``xform.align3d`` (e2spt) bring the particle onto the reference, so the rotation from
  reference to particle is ``E.T = Rz(az) @ Rx(alt) @ Rz(phi)``.

All ``matrix_to_*`` functions return the middle angle in [0, 180] and the others in (-180, 180];
at gimbal lock (middle angle 0° or 180°) the whole in-plane rotation goes into the first angle
named (rot, tdrot, az) and the last one is 0.
"""

from __future__ import annotations

import numpy as np

from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z

_GIMBAL_EPS = 1e-9


def relion_zyz_to_matrix(rot_deg: float, tilt_deg: float, psi_deg: float) -> np.ndarray:
    """RELION Euler angles (degrees) to the active rotation matrix, shape (3, 3)."""
    return (rotation_z(rot_deg) @ rotation_y(tilt_deg) @ rotation_z(psi_deg)).T


def matrix_to_relion_zyz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Active rotation matrix to RELION (rot, tilt, psi) in degrees, tilt in [0, 180]."""
    rot, tilt, psi = _decompose(np.asarray(matrix, dtype=float).T, "y", gimbal_into_first=True)
    return rot, tilt, psi


def dynamo_zxz_to_matrix(tdrot_deg: float, tilt_deg: float, narot_deg: float) -> np.ndarray:
    """Dynamo Euler angles (degrees) to the active rotation matrix, shape (3, 3)."""
    return (rotation_z(narot_deg) @ rotation_x(tilt_deg) @ rotation_z(tdrot_deg)).T


def matrix_to_dynamo_zxz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Active rotation matrix to Dynamo (tdrot, tilt, narot) in degrees, tilt in [0, 180]."""
    narot, tilt, tdrot = _decompose(
        np.asarray(matrix, dtype=float).T, "x", gimbal_into_first=False
    )
    return tdrot, tilt, narot


def eman_to_matrix(az_deg: float, alt_deg: float, phi_deg: float) -> np.ndarray:
    """EMAN2 Euler angles (degrees) to the active rotation matrix, shape (3, 3)."""
    return rotation_z(az_deg) @ rotation_x(alt_deg) @ rotation_z(phi_deg)


def matrix_to_eman(matrix: np.ndarray) -> tuple[float, float, float]:
    """Active rotation matrix to EMAN2 (az, alt, phi) in degrees, alt in [0, 180]."""
    az, alt, phi = _decompose(np.asarray(matrix, dtype=float), "x", gimbal_into_first=True)
    return az, alt, phi


def _decompose(m: np.ndarray, middle_axis: str, gimbal_into_first: bool) -> tuple[float, ...]:
    """Angles (a, b, c) in degrees with ``m = Rz(a) @ R_middle(b) @ Rz(c)``, b in [0, 180].

    At gimbal lock only a + c (b = 0) or a - c (b = 180) is defined; it goes into ``a`` when
    ``gimbal_into_first`` and into ``c`` otherwise, the other angle being 0.
    """
    sin_b = np.hypot(m[2, 0], m[2, 1])
    b = np.arctan2(sin_b, m[2, 2])
    if sin_b > _GIMBAL_EPS:
        if middle_axis == "y":  # Rz(a) Ry(b) Rz(c): column 2 = (ca sb, sa sb, cb)
            a = np.arctan2(m[1, 2], m[0, 2])
            c = np.arctan2(m[2, 1], -m[2, 0])
        else:  # Rz(a) Rx(b) Rz(c): column 2 = (sa sb, -ca sb, cb)
            a = np.arctan2(m[0, 2], -m[1, 2])
            c = np.arctan2(m[2, 0], m[2, 1])
        return _wrap(a), float(np.degrees(b)), _wrap(c)
    # b = 0: m = Rz(a + c); b = 180: the upper 2x2 block is a reflection fixing the middle axis
    in_plane = np.arctan2(m[1, 0], m[0, 0])
    if m[2, 2] > 0:
        a, c = (in_plane, 0.0) if gimbal_into_first else (0.0, in_plane)
    elif middle_axis == "y":  # Rz(a) Ry(180) Rz(c) has m[0,0] = -cos(a - c), m[1,0] = -sin(a - c)
        difference = np.arctan2(-m[1, 0], -m[0, 0])
        a, c = (difference, 0.0) if gimbal_into_first else (0.0, -difference)
    else:  # Rz(a) Rx(180) Rz(c) has m[0,0] = cos(a - c), m[1,0] = sin(a - c)
        a, c = (in_plane, 0.0) if gimbal_into_first else (0.0, -in_plane)
    return _wrap(a), float(np.degrees(b)), _wrap(c)


def _wrap(angle_rad: float) -> float:
    """Degrees in (-180, 180]."""
    degrees = float(np.degrees(angle_rad))
    degrees = (degrees + 180.0) % 360.0 - 180.0
    return 180.0 if degrees == -180.0 else degrees


# many at once ---------------------------------------------------------------------------
def _rotations(axis: str, angles_deg: np.ndarray) -> np.ndarray:
    """(N, 3, 3) active rotations about ``axis`` (as geometry.rotations, vectorised)."""
    radians = np.radians(np.asarray(angles_deg, dtype=float))
    c, s = np.cos(radians), np.sin(radians)
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = {"x": ((one, zero, zero), (zero, c, -s), (zero, s, c)),
            "y": ((c, zero, s), (zero, one, zero), (-s, zero, c)),
            "z": ((c, -s, zero), (s, c, zero), (zero, zero, one))}[axis]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def relion_zyz_to_matrices(angles_deg: np.ndarray) -> np.ndarray:
    """``relion_zyz_to_matrix`` of each row.

    Parameters
    ----------
    angles_deg : (N, 3) float
        RELION (rot, tilt, psi) per particle, degrees.

    Returns
    -------
    (N, 3, 3) active rotation matrices.
    """
    a = np.asarray(angles_deg, dtype=float).reshape(-1, 3)
    product = _rotations("z", a[:, 0]) @ _rotations("y", a[:, 1]) @ _rotations("z", a[:, 2])
    return product.transpose(0, 2, 1)


def matrices_to_relion_zyz(matrices: np.ndarray) -> np.ndarray:
    """``matrix_to_relion_zyz`` of each matrix: (N, 3, 3) -> (N, 3) (rot, tilt, psi), degrees."""
    m = np.asarray(matrices, dtype=float).reshape(-1, 3, 3).transpose(0, 2, 1)
    return _decompose_many(m, "y", gimbal_into_first=True)


def dynamo_zxz_to_matrices(angles_deg: np.ndarray) -> np.ndarray:
    """``dynamo_zxz_to_matrix`` of each row of (N, 3) (tdrot, tilt, narot), degrees."""
    a = np.asarray(angles_deg, dtype=float).reshape(-1, 3)
    product = _rotations("z", a[:, 2]) @ _rotations("x", a[:, 1]) @ _rotations("z", a[:, 0])
    return product.transpose(0, 2, 1)


def matrices_to_dynamo_zxz(matrices: np.ndarray) -> np.ndarray:
    """``matrix_to_dynamo_zxz`` of each matrix: (N, 3, 3) -> (N, 3) (tdrot, tilt, narot)."""
    m = np.asarray(matrices, dtype=float).reshape(-1, 3, 3).transpose(0, 2, 1)
    narot_tilt_tdrot = _decompose_many(m, "x", gimbal_into_first=False)
    return narot_tilt_tdrot[:, ::-1].copy()


def _decompose_many(m: np.ndarray, middle_axis: str, gimbal_into_first: bool) -> np.ndarray:
    """``_decompose`` of each (3, 3) block of ``m`` (N, 3, 3): (N, 3) degrees, same rules."""
    sin_b = np.hypot(m[:, 2, 0], m[:, 2, 1])
    b = np.arctan2(sin_b, m[:, 2, 2])
    if middle_axis == "y":
        a = np.arctan2(m[:, 1, 2], m[:, 0, 2])
        c = np.arctan2(m[:, 2, 1], -m[:, 2, 0])
    else:
        a = np.arctan2(m[:, 0, 2], -m[:, 1, 2])
        c = np.arctan2(m[:, 2, 0], m[:, 2, 1])
    locked = ~(sin_b > _GIMBAL_EPS)
    in_plane = np.arctan2(m[:, 1, 0], m[:, 0, 0])
    if middle_axis == "y":
        flipped = np.arctan2(-m[:, 1, 0], -m[:, 0, 0])
        flipped_c = -flipped
    else:
        flipped, flipped_c = in_plane, -in_plane
    upright = m[:, 2, 2] > 0
    lock_a = np.where(upright, in_plane, flipped)
    lock_c = np.where(upright, in_plane, flipped_c)
    if gimbal_into_first:
        a = np.where(locked, lock_a, a)
        c = np.where(locked, 0.0, c)
    else:
        a = np.where(locked, 0.0, a)
        c = np.where(locked, lock_c, c)
    return np.stack([_wrap_many(a), np.degrees(b), _wrap_many(c)], axis=1)


def _wrap_many(angles_rad: np.ndarray) -> np.ndarray:
    degrees = (np.degrees(angles_rad) + 180.0) % 360.0 - 180.0
    return np.where(degrees == -180.0, 180.0, degrees)
