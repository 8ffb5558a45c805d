"""The projector's geometry and algebra: matrices decomposed exactly, forward projection the
exact transpose of back-projection, a point lands where the projection matrices put it."""

from __future__ import annotations

import numpy as np
import pytest

from tomoweave.algorithms import projector, reconstruction
from tomoweave.geometry import project_points_a, projection_matrix, rotation_x, rotation_y


@pytest.mark.parametrize("args", [(30, 5, 85, 10, -20, 1.02), (0, 0, 0, 0, 0, 1),
                                  (-60, -3, -95, 3, 4, 0.98), (0, 4, 10, 0, 0, 1)])
def test_in_plane_part_and_tilt_part_recompose_the_matrix(args):
    matrix = projection_matrix(*args)
    affine, shift = projector.in_plane_affine(matrix)
    tilt = projector.tilt_rotations(matrix[None])[0]
    assert np.allclose(tilt, rotation_y(args[0]) @ rotation_x(args[1]), atol=1e-12)
    assert np.allclose(affine @ tilt[:2], matrix[:2, :3], atol=1e-12)
    assert np.allclose(shift, args[3:5])


@pytest.mark.parametrize("x_tilt_deg", [0.0, 3.0])
def test_forward_projection_is_the_transpose_of_back_projection(x_tilt_deg):
    rng = np.random.default_rng(0)
    shape, n_tilts = (20, 16, 24), 7
    matrices = np.stack([projection_matrix(t, x_tilt_deg) for t in np.linspace(-60, 60, n_tilts)])
    coefficients = projector.voxel_to_image_coefficients(matrices, shape, (16, 24), 1.0, 1.0)
    volume = rng.normal(size=shape).astype(np.float32)
    rows = rng.normal(size=(16, n_tilts, 24)).astype(np.float32)
    forward = projector.forward_project(volume, coefficients, rows.shape)
    back = projector.backproject(rows, coefficients, shape)
    assert np.vdot(forward, rows) == pytest.approx(np.vdot(volume, back), rel=1e-5)


def test_a_point_reconstructs_where_the_matrices_put_it():
    """Images of a Gaussian spot drawn at project_points_a(P, point), with in-plane rotation,
    shifts, x-tilt and magnification: the WBP peak must sit at the point within 0.3 voxel."""
    pixel_a, n, nz = 5.0, 64, 32
    point_a = np.array([40.0, -55.0, 22.0])
    tilts = np.arange(-60, 61, 3.0)
    rng = np.random.default_rng(2)
    matrices = np.stack([projection_matrix(t, 2.0, 84.0 + rng.normal(0, 0.3),
                                           rng.normal(0, 30), rng.normal(0, 30), 1.01)
                         for t in tilts])
    yy, xx = np.mgrid[0:n, 0:n]
    images = []
    for matrix in matrices:
        x_px, y_px = project_points_a(matrix, point_a)[0] / pixel_a + n // 2
        images.append(np.exp(-((xx - x_px) ** 2 + (yy - y_px) ** 2) / 2.0).astype(np.float32))
    geometry = reconstruction.make_geometry(matrices, (n, n), pixel_a, nz * pixel_a)
    volume = reconstruction.reconstruct_wbp(lambda i: images[i], geometry)
    peak = np.array(np.unravel_index(np.argmax(volume), volume.shape))
    window = volume[tuple(slice(p - 2, p + 3) for p in peak)].clip(0)
    offsets = np.mgrid[-2:3, -2:3, -2:3]
    centroid_zyx = peak + (offsets * window).sum(axis=(1, 2, 3)) / window.sum()
    expected_zyx = point_a[::-1] / pixel_a + np.array(volume.shape) // 2
    assert np.abs(centroid_zyx - expected_zyx).max() < 0.3, (centroid_zyx, expected_zyx)


def test_filters_and_bad_input():
    ramp = reconstruction.wbp_filter(64, "ramp")
    assert ramp[0] == 0 and ramp[-1] == pytest.approx(0.5)
    for name in ("shepp-logan", "cosine", "hamming", "sirt-like"):
        weights = reconstruction.wbp_filter(64, name)
        assert np.all(weights <= ramp + 1e-7) and weights[-1] < ramp[-1]
    with pytest.raises(ValueError, match="filter"):
        reconstruction.wbp_filter(64, "butterworth")
    with pytest.raises(ValueError, match="thickness_a"):
        reconstruction.make_geometry(np.eye(4)[None], (8, 8), 1.0, 0.0)
    assert reconstruction.tilt_weights(np.array([-3.0, 0.0, 3.0, 9.0])) == pytest.approx(
        np.radians([3.0, 3.0, 4.5, 6.0]))
