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


def _operator_matrices(coefficients, shape, rows_shape):
    """The forward projector and the back-projector as explicit matrices, from unit vectors."""
    n_voxels, n_pixels = int(np.prod(shape)), int(np.prod(rows_shape))
    forward = np.empty((n_pixels, n_voxels))
    for j in range(n_voxels):
        unit = np.zeros(n_voxels, dtype=np.float32)
        unit[j] = 1.0
        forward[:, j] = projector.forward_project(unit.reshape(shape), coefficients,
                                                  rows_shape).ravel()
    back = np.empty((n_voxels, n_pixels))
    for i in range(n_pixels):
        unit = np.zeros(n_pixels, dtype=np.float32)
        unit[i] = 1.0
        back[:, i] = projector.backproject(unit.reshape(rows_shape), coefficients, shape).ravel()
    return forward, back


@pytest.mark.parametrize("x_tilt_deg", [0.0, 3.0])
def test_forward_projection_is_the_transpose_of_back_projection(x_tilt_deg):
    """Entry by entry, forward projection equals the transpose of back-projection.

    An entry is the weight of one voxel in one image value: a sum over the stretched samples
    between them of products of two interpolation weights (|w| ≤ 1.2 each, Keys kernels), at
    most 8 terms, computed in float32 in an order the compiler and SIMD width choose. Its
    rounding error is then at most 8 * 2 * eps * 1.2**2 relative to the largest entry, on any
    CPU; a geometric error (a 0.05 px shift of one tilt) is 10^4 times larger. Comparing
    matrices, not dot products of random vectors, keeps cancellation (and BLAS's float32
    summation order) out of the tolerance.
    """
    shape, rows_shape = (8, 6, 10), (6, 3, 10)
    matrices = np.stack([projection_matrix(t, x_tilt_deg) for t in (-50.0, 5.0, 40.0)])
    coefficients = projector.voxel_to_image_coefficients(matrices, shape, rows_shape[::2], 1.0,
                                                         1.0)
    forward, back = _operator_matrices(coefficients, shape, rows_shape)
    scale = np.abs(forward).max()
    tolerance = 8 * 2 * float(np.finfo(np.float32).eps) * 1.2**2 * scale
    assert scale > 0.5 and np.abs(forward - back.T).max() <= tolerance
    # the comparison sees real errors: the same with one tilt shifted by 0.05 px
    shifted = coefficients.copy()
    shifted[1, 0] += 0.05
    wrong, _ = _operator_matrices(shifted, shape, rows_shape)
    assert np.abs(wrong - back.T).max() > 100 * tolerance


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
