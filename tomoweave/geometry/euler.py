"""Euler-angle conventions of other programs, converted to and from rotation matrices.

Inside tomoweave an orientation is a 3×3 active rotation matrix that turns the reference
(template, average) into the particle as it sits in the tomogram. Euler angles exist only here.

- RELION (rlnAngleRot, rlnAngleTilt, rlnAnglePsi): intrinsic ZYZ. RELION's own matrix ``A``
  (``Euler_angles2matrix``) projects the particle back onto the reference; our matrix is ``A.T``:
  ``R = Rz(rot) @ Ry(tilt) @ Rz(psi)``.
- Dynamo (tdrot, tilt, narot): intrinsic ZXZ, ``R = Rz(tdrot) @ Rx(tilt) @ Rz(narot)``.
- EMAN2 (az, alt, phi): EMAN's Transform is the passive ZXZ rotation
  ``Rz(phi) @ Rx(alt) @ Rz(az)``, so the active one is its transpose.

All ``matrix_to_*`` functions handle gimbal lock (middle angle 0° or 180°) by putting the whole
in-plane rotation into the first angle and returning 0 for the last.
"""

from __future__ import annotations

import numpy as np

from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z

_GIMBAL_EPS = 1e-9


def relion_zyz_to_matrix(rot_deg: float, tilt_deg: float, psi_deg: float) -> np.ndarray:
    """RELION Euler angles (degrees) to the active rotation matrix, shape (3, 3)."""
    return rotation_z(rot_deg) @ rotation_y(tilt_deg) @ rotation_z(psi_deg)


def matrix_to_relion_zyz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Active rotation matrix to RELION (rot, tilt, psi) in degrees, tilt in [0, 180]."""
    m = np.asarray(matrix, dtype=float)
    sin_tilt = np.hypot(m[2, 0], m[2, 1])
    tilt = np.arctan2(sin_tilt, m[2, 2])
    if sin_tilt > _GIMBAL_EPS:
        rot = np.arctan2(m[1, 2], m[0, 2])
        psi = np.arctan2(m[2, 1], -m[2, 0])
    elif m[2, 2] > 0:  # tilt = 0: only rot + psi is defined
        rot, psi = np.arctan2(m[1, 0], m[0, 0]), 0.0
    else:  # tilt = 180: only rot - psi is defined
        rot, psi = np.arctan2(-m[1, 0], -m[0, 0]), 0.0
    return float(np.degrees(rot)), float(np.degrees(tilt)), float(np.degrees(psi))


def dynamo_zxz_to_matrix(tdrot_deg: float, tilt_deg: float, narot_deg: float) -> np.ndarray:
    """Dynamo Euler angles (degrees) to the active rotation matrix, shape (3, 3)."""
    return rotation_z(tdrot_deg) @ rotation_x(tilt_deg) @ rotation_z(narot_deg)


def matrix_to_dynamo_zxz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Active rotation matrix to Dynamo (tdrot, tilt, narot) in degrees, tilt in [0, 180]."""
    return _matrix_to_zxz(matrix)


def eman_to_matrix(az_deg: float, alt_deg: float, phi_deg: float) -> np.ndarray:
    """EMAN2 Euler angles (degrees) to the active rotation matrix, shape (3, 3)."""
    return (rotation_z(phi_deg) @ rotation_x(alt_deg) @ rotation_z(az_deg)).T


def matrix_to_eman(matrix: np.ndarray) -> tuple[float, float, float]:
    """Active rotation matrix to EMAN2 (az, alt, phi) in degrees, alt in [0, 180]."""
    phi, alt, az = _matrix_to_zxz(np.asarray(matrix, dtype=float).T)
    if alt in (0.0, 180.0) or abs(np.sin(np.radians(alt))) <= _GIMBAL_EPS:
        # keep the convention "last angle is zero at gimbal lock": move the in-plane angle to az
        az, phi = (phi if alt < 90 else -phi), 0.0
    return az, alt, phi


def _matrix_to_zxz(matrix: np.ndarray) -> tuple[float, float, float]:
    m = np.asarray(matrix, dtype=float)
    sin_tilt = np.hypot(m[2, 0], m[2, 1])
    tilt = np.arctan2(sin_tilt, m[2, 2])
    if sin_tilt > _GIMBAL_EPS:
        first = np.arctan2(m[0, 2], -m[1, 2])
        last = np.arctan2(m[2, 0], m[2, 1])
    else:  # tilt 0 or 180: Rz(a) Rx(0|180) has m[1,0] = sin a, m[0,0] = cos a
        first, last = np.arctan2(m[1, 0], m[0, 0]), 0.0
    return float(np.degrees(first)), float(np.degrees(tilt)), float(np.degrees(last))
