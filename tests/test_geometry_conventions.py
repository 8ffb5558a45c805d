"""The geometry layer: rotations, Euler conventions, centred coordinates, the projection model."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoweave.geometry import (
    centered_a_to_pixels,
    dynamo_zxz_to_matrix,
    eman_to_matrix,
    matrix_to_dynamo_zxz,
    matrix_to_eman,
    matrix_to_relion_zyz,
    pixels_to_centered_a,
    project_points_a,
    projection_matrix,
    relion_zyz_to_matrix,
    rotation_angle_between_deg,
    rotation_y,
)
from tomoweave.geometry.rotations import is_rotation_matrix

angle = st.floats(-180, 180, allow_nan=False)
middle = st.one_of(st.floats(0, 180, allow_nan=False), st.sampled_from([0.0, 180.0]))


@settings(max_examples=200, deadline=None)
@given(angle, middle, angle)
def test_relion_dynamo_eman_round_trips_give_the_same_rotation(a, b, c):
    for to_matrix, from_matrix in ((relion_zyz_to_matrix, matrix_to_relion_zyz),
                                   (dynamo_zxz_to_matrix, matrix_to_dynamo_zxz),
                                   (eman_to_matrix, matrix_to_eman)):
        matrix = to_matrix(a, b, c)
        assert is_rotation_matrix(matrix)
        again = to_matrix(*from_matrix(matrix))
        assert rotation_angle_between_deg(matrix, again) < 1e-4


def test_euler_angles_come_back_exactly_away_from_gimbal_lock():
    assert np.allclose(matrix_to_relion_zyz(relion_zyz_to_matrix(10, 20, 30)), (10, 20, 30))
    assert np.allclose(matrix_to_dynamo_zxz(dynamo_zxz_to_matrix(-40, 75, 120)), (-40, 75, 120))
    assert np.allclose(matrix_to_eman(eman_to_matrix(15, 95, -60)), (15, 95, -60))


def test_relion_projection_direction_lands_on_the_beam():
    # RELION views the reference along (cos rot sin tilt, sin rot sin tilt, cos tilt): rotating
    # the reference into the particle must bring that direction onto the beam (+Z)
    for rot, tilt, psi in [(0, 90, 0), (30, 50, -70), (-120, 10, 45)]:
        direction = [np.cos(np.radians(rot)) * np.sin(np.radians(tilt)),
                     np.sin(np.radians(rot)) * np.sin(np.radians(tilt)), np.cos(np.radians(tilt))]
        assert np.allclose(relion_zyz_to_matrix(rot, tilt, psi) @ direction, [0, 0, 1], atol=1e-12)




@settings(max_examples=50, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(1, 200),
       st.floats(0.5, 20), st.floats(-1000, 1000), st.floats(-1000, 1000), st.floats(-500, 500))
def test_centred_coordinates_round_trip_and_centre_is_n_over_2(nx, ny, nz, pixel, x, y, z):
    size = (nx, ny, nz)
    pixels = centered_a_to_pixels([x, y, z], size, pixel)
    assert np.allclose(pixels_to_centered_a(pixels, size, pixel), [x, y, z], atol=1e-6)
    assert np.allclose(centered_a_to_pixels([0, 0, 0], size, pixel), [nx // 2, ny // 2, nz // 2])


def test_projection_matrix_tilts_about_y_then_rotates_and_shifts():
    points = np.array([[100.0, 0, 0], [0, 100.0, 0], [0, 0, 50.0]])
    untilted = project_points_a(projection_matrix(0.0), points)
    assert np.allclose(untilted, points[:, :2])
    tilted = project_points_a(projection_matrix(30.0), points)
    # a point on the tilt axis (Y) does not move; X shrinks by cos; Z moves along X by sin
    assert np.allclose(tilted[1], [0, 100])
    assert np.allclose(tilted[0], [100 * np.cos(np.radians(30)), 0])
    assert np.allclose(tilted[2], [50 * np.sin(np.radians(30)), 0])
    moved = project_points_a(projection_matrix(30.0, z_rot_deg=90, shift_x_a=7, shift_y_a=-3),
                             points[1:2])
    assert np.allclose(moved, [[-100 + 7, -3]])


def test_projection_matches_rotation_composition_for_random_alignment():
    rng = np.random.default_rng(1)
    points = rng.uniform(-500, 500, size=(20, 3))
    for _ in range(10):
        y, x, z = rng.uniform(-60, 60), rng.uniform(-3, 3), rng.uniform(-180, 180)
        sx, sy, mag = rng.uniform(-50, 50), rng.uniform(-50, 50), rng.uniform(0.98, 1.02)
        matrix = projection_matrix(y, x, z, sx, sy, mag)
        from tomoweave.geometry import rotation_x, rotation_z

        expected = mag * (rotation_z(z) @ rotation_y(y) @ rotation_x(x) @ points.T).T[:, :2]
        assert np.allclose(project_points_a(matrix, points), expected + [sx, sy])
