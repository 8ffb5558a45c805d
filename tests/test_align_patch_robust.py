"""align.patch's projection matching is guarded by a held-out score, and its reported residual
is that of its output."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tomoweave.algorithms.alignment.patch import residuals_under
from tomoweave.algorithms.alignment.projmatch import HeldOutMatcher, guarded_rounds
from tomoweave.algorithms.alignment.solver import solve_alignment
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry import projection_matrix
from tomoweave.sim import simulate_dataset


@pytest.fixture(scope="module")
def thin(tmp_path_factory):
    out = tmp_path_factory.mktemp("thin")
    series = simulate_dataset(out, preset="test", beads_on=False, tilt_step_deg=4.0,
                              seed=5).series[0]
    stack, _ = read_mrc(series.stack_path)
    return stack, series.truth()


def test_refinement_rounds_never_lower_the_held_out_score(thin):
    stack, truth = thin
    tilts = np.array([t.y_tilt_deg for t in truth.tilts])
    z_rot = np.array([t.z_rot_deg for t in truth.tilts])
    true = np.array([[t.shift_x_a, t.shift_y_a] for t in truth.tilts]) / truth.pixel_size_a
    # a slab 3x too thick proposes poor corrections; only those that help are kept
    n_tilts, n_y, n_x = stack.shape
    binned = stack.reshape(n_tilts, n_y // 4, 4, n_x // 4, 4).mean(axis=(2, 4))
    judge = HeldOutMatcher(binned, tilts, 3 * truth.thickness_a / truth.pixel_size_a / 4)
    start = true / 4 + np.random.default_rng(0).normal(0, 0.25, true.shape)
    before, per_tilt, step = judge.evaluate(z_rot, start)
    assert per_tilt.shape == (n_tilts,) and np.all(per_tilt <= 1) and step.shape == start.shape
    shifts, after, updates = guarded_rounds(judge, z_rot, start, 3)
    assert after >= before
    assert after == pytest.approx(judge.evaluate(z_rot, shifts)[0], abs=1e-6)
    assert len(updates) <= 3
    if not updates:
        assert np.array_equal(shifts, start)


def test_reported_residual_is_that_of_the_output():
    rng = np.random.default_rng(1)
    tilts = np.arange(-60, 61, 6.0)
    points = np.column_stack([rng.uniform(-80, 80, (20, 2)), rng.uniform(-20, 20, 20)])
    shifts = rng.normal(0, 3, (len(tilts), 2))
    observed = np.stack([(np.c_[points, np.ones(20)] @ projection_matrix(t, 0, 85, *s).T)[:, :2]
                         for t, s in zip(tilts, shifts, strict=True)], axis=1)
    solution = solve_alignment(observed, tilts, 85.0, z_rot_mode="fixed",
                               solve_magnification=False, solve_tilt_offset=False)
    assert residuals_under(observed, solution).mean_residual_px < 1e-3
    moved = solution.shifts_px.copy()
    moved[3] += [2.0, 0.0]  # an output 2 px off in one tilt: its residual says so
    report = residuals_under(observed, replace(solution, shifts_px=moved))
    assert report.tilt_residual_px[3] > 1.5
    assert report.mean_residual_px > solution.mean_residual_px + 0.05
