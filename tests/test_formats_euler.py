"""Euler conventions of RELION, Dynamo and EMAN2 against facts from their sources and each other."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoweave.geometry import (
    dynamo_zxz_to_matrix,
    eman_to_matrix,
    matrix_to_dynamo_zxz,
    matrix_to_eman,
    matrix_to_relion_zyz,
    relion_zyz_to_matrix,
    rotation_angle_between_deg,
)
from tomoweave.geometry.rotations import random_rotations

TOLERANCE_DEG = 1e-4
angle = st.floats(-180, 180, allow_nan=False)
middle = st.one_of(st.floats(0, 180, allow_nan=False), st.sampled_from([0.0, 180.0, 1e-10, 90.0]))


def _relion_euler_angles2matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix written out element by element (src/euler.cpp)."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ])


def _eman_transform_matrix(az, alt, phi):
    """EMAN2 Transform matrix for type "eman" (libEM/transform.cpp)."""
    a, b, p = np.radians([az, alt, phi])
    ca, sa, cb, sb, cp, sp = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(p), np.sin(p)
    return np.array([
        [cp * ca - cb * sa * sp, cp * sa + cb * ca * sp, sb * sp],
        [-sp * ca - cb * sa * cp, -sp * sa + cb * ca * cp, sb * cp],
        [sb * sa, -sb * ca, cb],
    ])


def test_relion_matrix_is_relions_own_a_matrix():
    # RELION rotates the reference by A to match a particle (Projector samples at A^-1 k)
    for angles in [(10, 20, 30), (-170, 95, 44), (0, 180, 12)]:
        assert np.allclose(relion_zyz_to_matrix(*angles), _relion_euler_angles2matrix(*angles))


def test_relion_projection_direction_lands_on_the_beam_axis():
    rng = np.random.default_rng(3)
    for rot, tilt, psi in rng.uniform([-180, 0, -180], [180, 180, 180], size=(20, 3)):
        r, t = np.radians(rot), np.radians(tilt)
        direction = [np.cos(r) * np.sin(t), np.sin(r) * np.sin(t), np.cos(t)]
        assert np.allclose(relion_zyz_to_matrix(rot, tilt, psi) @ direction, [0, 0, 1])


def test_known_equivalent_dynamo_and_relion_poses():
    # the same particle pose in both programs (identical reconstructions)
    dynamo = dynamo_zxz_to_matrix(-47.2730, 1.1777, -132.3000)
    relion = relion_zyz_to_matrix(137.7000, 1.1777, 42.7270)
    assert rotation_angle_between_deg(dynamo, relion) < 1e-3
    tdrot, tilt, narot = matrix_to_dynamo_zxz(relion)
    assert np.allclose([tdrot, tilt, narot], [-47.2730, 1.1777, -132.3000], atol=1e-3)


def test_eman_matrix_is_transpose_of_the_transform_matrix():
    for angles in [(20, 50, -70), (-120, 170, 33)]:
        assert np.allclose(eman_to_matrix(*angles), _eman_transform_matrix(*angles).T)


@settings(max_examples=300, deadline=None)
@given(angle, middle, angle)
def test_round_trip_relion_matrix_dynamo_eman_relion(a, b, c):
    start = relion_zyz_to_matrix(a, b, c)
    dynamo = dynamo_zxz_to_matrix(*matrix_to_dynamo_zxz(start))
    assert rotation_angle_between_deg(start, dynamo) < TOLERANCE_DEG
    eman = eman_to_matrix(*matrix_to_eman(dynamo))
    assert rotation_angle_between_deg(start, eman) < TOLERANCE_DEG
    relion = relion_zyz_to_matrix(*matrix_to_relion_zyz(eman))
    assert rotation_angle_between_deg(start, relion) < TOLERANCE_DEG


@settings(max_examples=200, deadline=None)
@given(angle, st.sampled_from([0.0, 180.0]), angle)
def test_gimbal_lock_puts_in_plane_angle_first(a, b, c):
    for to_matrix, from_matrix in ((relion_zyz_to_matrix, matrix_to_relion_zyz),
                                   (eman_to_matrix, matrix_to_eman)):
        matrix = to_matrix(a, b, c)
        first, middle_deg, last = from_matrix(matrix)
        assert middle_deg in (0.0, 180.0) and last == 0.0
        assert rotation_angle_between_deg(matrix, to_matrix(first, middle_deg, last)) < TOLERANCE_DEG
    matrix = dynamo_zxz_to_matrix(a, b, c)
    tdrot, tilt, narot = matrix_to_dynamo_zxz(matrix)
    assert tilt in (0.0, 180.0) and narot == 0.0
    assert rotation_angle_between_deg(matrix, dynamo_zxz_to_matrix(tdrot, tilt, narot)) < TOLERANCE_DEG


def test_random_rotations_round_trip_each_convention():
    rotations = random_rotations(500, np.random.default_rng(7))
    for matrix in rotations:
        for to_matrix, from_matrix in ((relion_zyz_to_matrix, matrix_to_relion_zyz),
                                       (dynamo_zxz_to_matrix, matrix_to_dynamo_zxz),
                                       (eman_to_matrix, matrix_to_eman)):
            angles = from_matrix(matrix)
            assert 0.0 <= angles[1] <= 180.0
            assert rotation_angle_between_deg(matrix, to_matrix(*angles)) < TOLERANCE_DEG
