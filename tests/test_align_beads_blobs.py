"""Fiducial alignment on a phantom tomoweave was not tuned on (tests/align_blob_phantom.py).

12 gold beads (solid spheres) among 60 protein-like blobs of similar size (clusters of
anisotropic Gaussians, projected exactly), random shifts of 6 px, dark and light beads.
Errors are reprojection errors of points spread through the field, after the best 3D
translation (``quality.reprojection_rms``), so shifts, magnifications and the tilt axis count.
"""

from __future__ import annotations

import numpy as np
import pytest
from align_blob_phantom import make_blob_phantom

from tomoweave.algorithms.alignment.beads import detect_beads, resolve_polarity
from tomoweave.algorithms.alignment.fiducial import align_with_beads
from tomoweave.algorithms.alignment.quality import field_points_px, reprojection_rms
from tomoweave.geometry import project_points_a

TILTS = np.arange(-60.0, 60.1, 4.0)


def _true_error(phantom, result) -> float:
    truth = np.stack([phantom.matrix(i) for i in range(len(phantom.tilts_deg))])
    size_xy = phantom.stack.shape[:0:-1]
    points = field_points_px(size_xy, 30.0)
    return reprojection_rms(result.solution.matrices(), truth[result.solved_tilts], points)


@pytest.fixture(scope="module")
def clean():
    return make_blob_phantom(seed=0, tilts_deg=TILTS)


def test_detection_takes_the_beads_not_the_blobs(clean):
    centre = np.array(clean.stack.shape[:0:-1]) // 2
    for polarity, phantom in (("dark", clean), ("light", clean.inverted())):
        for i in (0, len(TILTS) // 2):
            found, scores = detect_beads(phantom.stack[i], clean.bead_diameter_px,
                                         polarity=polarity)
            beads = project_points_a(clean.matrix(i), clean.beads_px)
            blobs = project_points_a(clean.matrix(i), clean.blobs_px)
            inside = np.all(np.abs(beads) < centre - clean.bead_diameter_px, axis=1)
            to_bead = np.linalg.norm(found[:, None] - beads[None], axis=2).min(axis=1)
            is_bead = to_bead < 0.3
            # every visible bead found within 0.3 px, the beads are the strongest detections,
            # and at most a few blobs pass in one image (tracking across tilts drops them)
            assert is_bead.sum() >= inside.sum() - 1, (polarity, i, to_bead)
            assert is_bead[: is_bead.sum()].all(), (polarity, i, to_bead)
            assert len(found) <= inside.sum() + 3, (polarity, i, len(found), inside.sum())
            assert np.all(np.diff(scores) <= 0), "strongest first"
            assert len(blobs) == 60


def test_polarity_is_detected(clean):
    diameter = clean.bead_diameter_px
    reference = len(TILTS) // 2
    assert resolve_polarity(clean.stack[reference], diameter, "auto")[0] == "dark"
    assert resolve_polarity(-clean.stack[reference], diameter, "auto")[0] == "light"
    assert resolve_polarity(clean.stack[reference], diameter, "light")[0] == "light"
    with pytest.raises(ValueError, match="bead_polarity"):
        resolve_polarity(clean.stack[reference], diameter, "bright")


@pytest.mark.parametrize("polarity", ["dark", "light"])
def test_alignment_among_blobs_in_both_polarities(clean, polarity):
    phantom = clean if polarity == "dark" else clean.inverted()
    result = align_with_beads(phantom.stack, phantom.tilts_deg, 86.0, clean.bead_diameter_px)
    assert any(f"polarity {polarity}" in line for line in result.log)
    assert result.solved_tilts.all()
    assert result.solution.kept_points.sum() <= 13, "blobs were taken for beads"
    error = _true_error(phantom, result)
    assert error <= 0.3, f"{polarity}: reprojection error {error:.3f} px"
    assert abs(result.solution.z_rot_deg[0] - 85.0) < 0.3
    # the reported error estimate describes the true error, and no warning is given
    assert 0.5 * error <= result.estimated_error_px <= 2.0 * error
    assert not result.warnings


@pytest.mark.slow
@pytest.mark.parametrize("seed, noise, n_beads", [(2, 0.2, 12), (3, 0.4, 12), (4, 0.3, 7)])
def test_reported_error_predicts_the_true_error(seed, noise, n_beads):
    phantom = make_blob_phantom(seed=seed, tilts_deg=TILTS, noise_sigma=noise, n_beads=n_beads)
    result = align_with_beads(phantom.stack, phantom.tilts_deg, 85.0, phantom.bead_diameter_px)
    error = _true_error(phantom, result)
    estimate = result.estimated_error_px
    assert 0.5 * error <= estimate <= 2.0 * error, f"estimate {estimate:.3f}, true {error:.3f} px"
    assert bool(result.warnings) == (estimate > 0.5)


def test_too_few_beads_to_check_the_fit_is_a_warning():
    phantom = make_blob_phantom(seed=5, size=160, tilts_deg=np.arange(-60.0, 60.1, 6.0),
                                n_beads=4, n_blobs=10)
    result = align_with_beads(phantom.stack, phantom.tilts_deg, 85.0, phantom.bead_diameter_px)
    assert not np.isfinite(result.estimated_error_px)
    assert len(result.warnings) == 1 and "not checked" in result.warnings[0]
