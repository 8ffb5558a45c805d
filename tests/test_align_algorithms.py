"""Alignment kernels on exact phantoms (tests/test_align_phantom.py) with known geometry.

Shift errors are measured after removing the best global 3D translation of the specimen
(``translation_free_rms``): the data cannot tell a translated specimen from shifted images.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_align_phantom import make_phantom

from tomoweave.algorithms.alignment import solve_alignment, translation_free_rms
from tomoweave.algorithms.alignment.beads import detect_beads
from tomoweave.algorithms.alignment.fiducial import NoBeadsError, align_with_beads, solve_covered
from tomoweave.algorithms.alignment.offset import tilt_offset_from_intensity
from tomoweave.algorithms.alignment.xcorr import coarse_align
from tomoweave.geometry import projection_matrix


def _synthetic_tracks(seed=0, noise_px=0.3, z_rot_deg=85.3, offset_deg=1.2, layers=True):
    rng = np.random.default_rng(seed)
    tilts = np.arange(-60, 61, 3.0)
    n = 30
    z = rng.choice([-60.0, 60.0], n) if layers else rng.uniform(-60, 60, n)
    points = np.column_stack([rng.uniform(-400, 400, n), rng.uniform(-400, 400, n), z])
    shifts = rng.normal(0, 20, (len(tilts), 2))
    mag = 1 + rng.normal(0, 0.003, len(tilts))
    mag[np.argmin(np.abs(tilts))] = 1
    matrices = [projection_matrix(t + offset_deg, 0, z_rot_deg, *s, m)
                for t, s, m in zip(tilts, shifts, mag, strict=True)]
    observed = np.stack([(np.c_[points, np.ones(n)] @ m.T)[:, :2] for m in matrices], axis=1)
    observed += rng.normal(0, noise_px, observed.shape)
    observed[rng.random((n, len(tilts))) < 0.1] = np.nan
    scaled = np.stack([m[:2, :3] for m in matrices])
    return observed, tilts, shifts, scaled, mag


def test_solver_recovers_geometry_and_rejects_mistracked_points():
    observed, tilts, shifts, scaled, mag = _synthetic_tracks()
    observed[3, 5] += 15.0  # two mis-tracked positions
    observed[7, 20] += 9.0
    solution = solve_alignment(observed, tilts, 86.5)
    assert not solution.kept_observations[3, 5] and not solution.kept_observations[7, 20]
    assert translation_free_rms(solution.shifts_px, shifts, scaled)[0] < 0.2
    assert abs(solution.z_rot_deg[0] - 85.3) < 0.05
    assert abs(solution.tilt_offset_deg - 1.2) < 0.1  # from the two flat bead layers
    assert np.abs(solution.magnification - mag).max() < 0.002
    assert 0.25 < solution.mean_residual_px < 0.5  # 2D Gaussian noise of 0.3 px per axis


def test_solver_per_tilt_rotation_mode_and_noise_free_exactness():
    observed, tilts, shifts, scaled, _ = _synthetic_tracks(seed=1, noise_px=0.0)
    solution = solve_alignment(observed, tilts, 84.0, z_rot_mode="per_tilt")
    assert np.abs(solution.z_rot_deg - 85.3).max() < 1e-3
    assert translation_free_rms(solution.shifts_px, shifts, scaled)[0] < 1e-3
    assert solution.mean_residual_px < 1e-3


def test_solver_refuses_too_few_tilts():
    observed, tilts, *_ = _synthetic_tracks()
    with pytest.raises(ValueError, match="at least 3 tilts"):
        solve_alignment(observed[:, :2], tilts[:2], 85.0)


def test_tilt_offset_from_a_beer_lambert_intensity_curve():
    tilts = np.arange(-60, 61, 3.0)
    intensity = 300 * np.exp(-0.3 / np.cos(np.radians(tilts - 0.8)))
    offset, ratio, misfit = tilt_offset_from_intensity(intensity, tilts)
    assert abs(offset + 0.8) < 0.01 and abs(ratio - 0.3) < 1e-3 and misfit < 1e-6


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=200, n_beads=16, seed=1, noise_sigma=0.5, tilt_offset_deg=1.5,
                        z_rot_deg=84.0, magnification_sigma=0.003, shift_sigma_px=8)


def test_coarse_cross_correlation_finds_the_shifts(phantom):
    shifts, _ = coarse_align(phantom.stack, phantom.tilts_deg, 84.0)
    rms, _ = translation_free_rms(shifts, phantom.shifts_px, phantom.scaled_rotations())
    assert rms < 1.5  # coarse: parallax of a thick specimen is not modelled


def test_bead_detection_is_subpixel(phantom):
    truth = phantom.bead_positions_px()
    errors = []
    for i in range(0, len(phantom.tilts_deg), 4):
        found, _ = detect_beads(phantom.stack[i], 2 * phantom.bead_radius_px)
        distance = np.linalg.norm(found[:, None] - truth[None, :, i], axis=2).min(axis=1)
        assert (distance < 2).sum() >= 0.8 * len(truth)
        errors.extend(distance[distance < 2])
    assert np.median(errors) < 0.15


def test_bead_alignment_of_the_phantom_meets_the_acceptance(phantom):
    result = align_with_beads(phantom.stack, phantom.tilts_deg, 86.0,
                              2 * phantom.bead_radius_px, tilt_offset_method="beads")
    solution = result.solution
    assert result.solved_tilts.all()
    rms, _ = translation_free_rms(solution.shifts_px, phantom.shifts_px,
                                  phantom.scaled_rotations())
    assert rms < 0.5
    assert abs(solution.z_rot_deg[0] - 84.0) < 0.3
    assert abs(solution.tilt_offset_deg - 1.5) < 0.3


def test_no_beads_is_reported():
    empty = make_phantom(size=96, tilts_deg=np.arange(-30, 31, 10.0), n_beads=0, n_features=500)
    with pytest.raises(NoBeadsError, match="gold beads found"):
        align_with_beads(empty.stack, empty.tilts_deg, 85.0, 6.0)


def test_an_undetermined_tilt_axis_falls_back_to_the_nominal_one():
    # four beads within ±20 px: the fitted axis would be degrees off; its standard error says
    # so and the nominal axis is kept
    rng = np.random.default_rng(3)
    tilts = np.arange(-60, 61, 3.0)
    points = np.column_stack([rng.uniform(-20, 20, (4, 2)), rng.uniform(-5, 5, 4)])
    observed = np.stack([
        (np.c_[points, np.ones(4)] @ projection_matrix(t, 0, 86.0, *rng.normal(0, 5, 2)).T)[:, :2]
        for t in tilts], axis=1) + rng.normal(0, 0.4, (4, len(tilts), 2))
    solution, solved = solve_covered(observed, tilts, 85.0)
    assert solved.all()
    assert np.all(solution.z_rot_deg == 85.0)
    assert any("too uncertain" in line for line in solution.log)
    observed, tilts, *_ = _synthetic_tracks(seed=3, noise_px=0.4)
    many, _ = solve_covered(observed, tilts, 85.0)
    assert many.z_rot_sigma_deg < 0.05 and abs(many.z_rot_deg[0] - 85.3) < 0.1
