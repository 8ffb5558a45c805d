"""End to end: simulate -> align.* through tomoweave.api.Project, against the simulator's truth.

Shifts are compared like with like: a shift is only defined up to a 3D translation of the
specimen (it moves every tilt's shift by ``m_i R_i[:2] @ t``), so the best such translation is
removed from the difference before the RMS (``translation_free_rms``). The tilt-axis angle and
the tilt-angle offset have no such freedom once the offset is measured (here from the
Beer-Lambert intensity curve the simulator models), so they are compared directly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tomoweave.algorithms.alignment import translation_free_rms
from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry import project_points_a, projection_matrix
from tomoweave.sim import load_truth

SIM_PARAMS = {"preset": "test", "seed": 5, "image_size_px": 160, "exclude_templates": ["3j9i"],
              "tilt_step_deg": 4.0}


def _simulate(tmp_path_factory, name: str, **params):
    """simulate -> (project, run, truth) through the Python API, as a user would."""
    project = Project.init(tmp_path_factory.mktemp(f"{name}_project"))
    simulated = project.run("simulate", params={**SIM_PARAMS, **params}, executor="inline")
    assert simulated.state == "finished"
    series = project.items(simulated, "tilt_series")[0]
    truth = load_truth(project.root / simulated.folder / "outputs" / "truth" / f"{series.name}.json")
    return project, simulated, truth


@pytest.fixture(scope="module")
def beads(tmp_path_factory):
    return _simulate(tmp_path_factory, "beads", beads_on=True)


@pytest.fixture(scope="module")
def bead_free(tmp_path_factory):
    return _simulate(tmp_path_factory, "nobeads", beads_on=False)


def _errors_against_truth(series, truth):
    """(shift RMS px after removing the best 3D translation, axis error °, offset error °)."""
    pixel = truth.pixel_size_a
    by_nominal = {round(t.nominal_tilt_deg, 2): t for t in truth.tilts}
    pairs = [(t.alignment, by_nominal[round(t.tilt_deg, 2)]) for t in series.tilts
             if not t.excluded]
    assert len(pairs) >= 0.9 * len(truth.tilts), "most tilts must be aligned"
    found = np.array([[a.shift_x_a, a.shift_y_a] for a, _ in pairs]) / pixel
    true = np.array([[t.shift_x_a, t.shift_y_a] for _, t in pairs]) / pixel
    scaled = np.stack([projection_matrix(t.y_tilt_deg, t.x_tilt_deg, t.z_rot_deg)[:2, :3]
                       for _, t in pairs])
    rms_px, _ = translation_free_rms(found, true, scaled)
    axis_error = np.mean([a.z_rot_deg - t.z_rot_deg for a, t in pairs])
    offset_error = np.mean([a.y_tilt_deg - t.y_tilt_deg for a, t in pairs])
    return rms_px, abs(axis_error), abs(offset_error)


def test_fiducial_alignment_recovers_the_simulated_geometry(beads):
    project, simulated, truth = beads
    run = project.run("align.fiducial", inputs={"tilt_series": simulated.name},
                      params={"bead_diameter_a": truth.bead_diameter_a}, executor="inline")
    assert run.state == "finished"
    series = project.items(run, "tilt_series")[0]
    rms_px, axis_error_deg, offset_error_deg = _errors_against_truth(series, truth)
    assert rms_px < 0.5, f"shift RMS {rms_px:.3f} px"
    assert axis_error_deg < 0.3, f"tilt axis off by {axis_error_deg:.3f}°"
    assert offset_error_deg < 0.3, f"tilt offset off by {offset_error_deg:.3f}°"
    # residuals, bead positions and plots are reported
    assert 0 < series.alignment_residual_a < 0.5 * truth.pixel_size_a
    assert len(series.fiducials_a) >= 6
    record = series.to_record()
    for tilt in record["tilts"]:
        assert {"tilt_deg", "shift_x_a", "shift_y_a", "z_rot_deg", "residual_a"} <= set(tilt)
    json.dumps(record)
    outputs = project.root / run.folder / "outputs"
    assert (outputs / f"{series.name}_residuals.png").stat().st_size > 1000
    assert (outputs / f"{series.name}_shifts.png").stat().st_size > 1000
    # the solved 3D beads (Å from the tomogram centre) match the true ones up to the translation
    found = np.array(series.fiducials_a)
    true = np.array(truth.beads_a)
    distance = np.linalg.norm(found[:, None, :] - true[None, :, :], axis=2)
    nearest = true[np.argmin(distance, axis=1)]
    offset = np.median(found - nearest, axis=0)
    assert np.median(np.linalg.norm(found - offset - nearest, axis=1)) < 2 * truth.pixel_size_a


def test_xcorr_then_aligned_stack_puts_beads_where_the_model_says(beads):
    project, simulated, truth = beads
    coarse = project.run("align.xcorr", inputs={"tilt_series": simulated.name},
                         executor="inline")
    assert coarse.state == "finished"
    series = project.items(coarse, "tilt_series")[0]
    rms_px, _, _ = _errors_against_truth(series, truth)
    assert rms_px < 3.0, f"coarse shift RMS {rms_px:.2f} px"
    fiducial = project.run("align.fiducial", inputs={"tilt_series": coarse.name},
                           executor="inline")
    applied = project.run("tiltseries.apply_alignment",
                          inputs={"tilt_series": fiducial.name}, executor="inline")
    assert applied.state == "finished"
    aligned = project.items(applied, "tilt_series")[0]
    stack, _ = read_mrc(project.path(aligned.tilts[0].image_path))
    assert stack.shape[0] == len(aligned.tilts)
    # in the aligned stack the tilt axis is Y: a bead at X lands at (Ry(y_tilt) X)_xy
    tilt = max(aligned.tilts, key=lambda t: t.tilt_deg)
    image = stack[tilt.image_index]
    matrix = projection_matrix(tilt.alignment.y_tilt_deg, tilt.alignment.x_tilt_deg)
    fiducial_series = project.items(fiducial, "tilt_series")[0]
    found = np.array(fiducial_series.fiducials_a)
    centre = np.array(image.shape[::-1]) // 2
    for position in project_points_a(matrix, found) / truth.pixel_size_a + centre:
        x, y = np.round(position).astype(int)
        if 5 <= x < image.shape[1] - 5 and 5 <= y < image.shape[0] - 5:
            window = image[y - 4 : y + 5, x - 4 : x + 5]
            assert window.min() < np.median(image) - 2 * image.std(), "no dark bead there"


def test_fiducial_alignment_without_beads_says_so_and_suggests_patch(bead_free):
    project, simulated, _ = bead_free
    run = project.run("align.fiducial", inputs={"tilt_series": simulated.name},
                      executor="inline")
    assert run.state in ("failed", "finished with failures")
    error = next(iter(project.catalog.journal(run.id).values()))["error"]
    assert "bead" in error and "align.patch" in error


def test_too_few_tilts_is_a_clear_error(beads):
    project, simulated, truth = beads
    keep = sorted(t.nominal_tilt_deg for t in truth.tilts)[:2]
    few = project.run("tiltseries.exclude_views", inputs={"tilt_series": simulated.name},
                      params={"tilts": [t.nominal_tilt_deg for t in truth.tilts
                                        if t.nominal_tilt_deg not in keep]},
                      executor="inline")
    assert few.state == "finished"
    run = project.run("align.fiducial", inputs={"tilt_series": few.name}, executor="inline")
    assert run.state in ("failed", "finished with failures")
    error = next(iter(project.catalog.journal(run.id).values()))["error"]
    assert "2 included tilts" in error and "at least 3" in error
def test_patch_alignment_on_a_bead_free_series(bead_free):
    project, simulated, truth = bead_free
    run = project.run("align.patch", inputs={"tilt_series": simulated.name}, executor="inline")
    assert run.state == "finished"
    series = project.items(run, "tilt_series")[0]
    rms_px, _, offset_error_deg = _errors_against_truth(series, truth)
    assert rms_px < 1.0, f"patch shift RMS {rms_px:.3f} px"
    assert offset_error_deg < 0.3, f"tilt offset off by {offset_error_deg:.3f}°"
    # the axis stays nominal (tilt_axis_mode "fixed"): what the series was told
    assert all(t.alignment.z_rot_deg == truth.nominal_tilt_axis_deg for t in series.tilts)
    # the reported residual is that of the output, and the refinement says how it was judged
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "held-out score" in log and "residual of the patch tracks under the final" in log


def test_patch_alignment_starts_from_a_coarse_xcorr_alignment(bead_free):
    project, simulated, truth = bead_free
    coarse = project.run("align.xcorr", inputs={"tilt_series": simulated.name},
                         executor="inline")
    log = (project.root / coarse.folder / "logs" / "run.log").read_text()
    assert "coarse alignment" in log and "align.patch" in log
    run = project.run("align.patch", inputs={"tilt_series": coarse.name}, executor="inline")
    assert run.state == "finished"
    rms_px, _, _ = _errors_against_truth(project.items(run, "tilt_series")[0], truth)
    assert rms_px < 1.0, f"patch shift RMS {rms_px:.3f} px from the xcorr start"
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "given start" in log


