"""Scoring against ground truth: exact answers score perfectly, known errors are measured."""

from __future__ import annotations

import numpy as np
import pytest

from tomoweave.geometry.rotations import rotation_z
from tomoweave.model import Particle
from tomoweave.sim import simulate_dataset
from tomoweave.sim.metrics import (
    alignment_errors,
    ctf_errors,
    orientation_errors_deg,
    picking_scores,
)


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    data = simulate_dataset(tmp_path_factory.mktemp("metrics"), preset="tiny", seed=21,
                            particles={"1bxn": 4, "6pxm": 4}, thickness_a=800.0)
    return data.series[0].truth()


def test_alignment_errors(truth):
    exact = alignment_errors(truth, truth.tilt_alignments())
    assert exact["rms_a"] < 1e-6 and exact["z_rot_error_deg"] == 0
    # a common shift of every tilt along the tilt axis is a translation of the tomogram (along
    # its Y): no error once that offset is allowed for
    axis = rotation_z(truth.tilts[0].z_rot_deg) @ [0.0, 30.0, 0.0]
    moved = [a.model_copy(update={"shift_x_a": a.shift_x_a + axis[0],
                                  "shift_y_a": a.shift_y_a + axis[1]})
             for a in truth.tilt_alignments()]
    assert alignment_errors(truth, moved)["rms_a"] < 1e-6
    assert alignment_errors(truth, moved, allow_offset=False)["rms_a"] == pytest.approx(30.0)
    # one tilt off by 16 Å is found on that tilt
    wrong = truth.tilt_alignments()
    wrong[3] = wrong[3].model_copy(update={"shift_y_a": wrong[3].shift_y_a + 16.0})
    errors = alignment_errors(truth, wrong, allow_offset=False)
    assert errors["per_tilt_a"][3] == pytest.approx(16.0)
    assert max(np.delete(errors["per_tilt_a"], 3)) < 1e-9
    # a tilt-axis error of 1° is reported as such
    rotated = [a.model_copy(update={"z_rot_deg": a.z_rot_deg + 1.0})
               for a in truth.tilt_alignments()]
    result = alignment_errors(truth, rotated)
    assert result["z_rot_error_deg"] == pytest.approx(1.0) and result["rms_a"] > 3.0
    skipped = truth.tilt_alignments()
    skipped[0] = None
    assert np.isnan(alignment_errors(truth, skipped)["per_tilt_a"][0])


def test_ctf_errors(truth):
    ctfs = truth.ctf_tilts()
    assert ctf_errors(truth, ctfs)["defocus_rms_a"] == 0
    off = [c.model_copy(update={"defocus_u_a": c.defocus_u_a + 200,
                                "defocus_v_a": c.defocus_v_a + 200}) for c in ctfs]
    assert ctf_errors(truth, off)["defocus_rms_a"] == pytest.approx(200)


def test_picking_and_orientation_scores(truth):
    true_a = truth.particle_positions_a()
    assert len(true_a) >= 6
    rng = np.random.default_rng(0)
    found = np.concatenate([true_a[:-2] + rng.normal(0, 5, size=(len(true_a) - 2, 3)),
                            [[9999.0, 0.0, 0.0]]])
    scores = picking_scores(truth, found, tolerance_a=30.0)
    assert scores["recall"] == pytest.approx((len(true_a) - 2) / len(true_a))
    assert scores["precision"] == pytest.approx((len(true_a) - 2) / (len(true_a) - 1))
    assert scores["mean_distance_a"] < 15
    particles = truth.particles()
    turned = [p.model_copy(update={"rotation": (p.rotation_matrix @ rotation_z(10)).tolist()})
              for p in particles]
    errors = orientation_errors_deg(truth, turned, tolerance_a=10.0)
    np.testing.assert_allclose(errors, 10.0, atol=1e-6)
    assert len(errors) == len(particles)
    assert isinstance(particles[0], Particle)
