"""No priors (issue 12): particles at unknown orientations, a reference-free model from random
orientations (average.initial_model), then average.refine searching ±30° around its poses, reach
the right structure, right hand: the map, brought into the truth's frame by the rotation and
shift the particles' poses imply, has a map-to-truth FSC 0.5 within 1.3× of the oracle's (a
mirrored map cannot: no rotation turns the chiral ribosome into its mirror image)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from averaging_star import write_star_set

from tomoweave.algorithms import fourier, volumes
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry.sampling import orientation_errors_deg
from tomoweave.sim.oracle import resolution_to_truth_a

BOX, PIXEL_A, DIAMETER_A = 32, 12.0, 280.0


def _log(project, run) -> str:
    return (project.root / run.folder / "logs" / "run.log").read_text()


def _frame_of(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Q with model = Q · truth, from particle_i = R_true_i truth = R_found_i model: the
    rotation nearest to the mean of R_found_iᵀ R_true_i, again over the particles within 20°
    of the first estimate (a few particles left in a wrong orientation must not tilt it)."""
    chosen = np.ones(len(found), dtype=bool)
    for _ in range(2):
        u, _, vt = np.linalg.svd(np.einsum("nji,njk->ik", found[chosen], true[chosen]))
        q = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
        errors = orientation_errors_deg(np.einsum("nij,jk->nik", found, q), true, "C1")
        chosen = errors <= max(20.0, float(np.min(errors)))
    return q


def _shifted_to(volume: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``volume`` moved onto ``target`` by the cross-correlation peak (voxel, then parabolic)."""
    cc = scipy.fft.irfftn(scipy.fft.rfftn(target) * np.conj(scipy.fft.rfftn(volume)),
                          s=volume.shape)
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape))
    shift = peak.astype(float)
    for axis in range(3):
        values = [cc[tuple((peak + d * np.eye(3, dtype=int)[axis]) % BOX)] for d in (-1, 0, 1)]
        curvature = values[0] - 2 * values[1] + values[2]
        if curvature < 0:
            shift[axis] += 0.5 * (values[0] - values[2]) / curvature
    shift = (shift + BOX // 2) % BOX - BOX // 2
    kz, ky, kx = fourier.rfft_frequencies(volume.shape)
    phase = np.exp(-2j * np.pi * (kz * shift[0] + ky * shift[1] + kx * shift[2]))
    return scipy.fft.irfftn(scipy.fft.rfftn(volume) * phase, s=volume.shape).astype(np.float32)


@pytest.mark.slow
def test_no_priors_reference_free_model_refines_to_the_right_structure(tmp_path):
    star_set = write_star_set(tmp_path / "data", count=64, box_px=BOX, pixel_size_a=PIXEL_A,
                              noise=0.2, prior_error_deg=(0.0, 180.0), seed=5)
    truth = star_set.particles
    project = Project.init(tmp_path / "project")
    project.run("import.subtomograms", params={"files": [str(star_set.star)]},
                executor="inline", name="imported")
    initial = project.run("average.initial_model", inputs={"subtomograms": "imported"},
                          params={"method": "reference_free", "particle_diameter_a": DIAMETER_A,
                                  "resolution_a": 40.0, "rounds": 6, "subset_size": 32},
                          executor="inline", name="initial")
    assert initial.state == "finished", _log(project, initial)
    run = project.run("average.refine", inputs={"subtomograms": "initial.subtomograms",
                                                "reference": "initial.model"},
                      params={"particle_diameter_a": DIAMETER_A, "max_iterations": 6,
                              "local_range_deg": 30.0}, executor="inline", name="refined")
    assert run.state == "finished", _log(project, run)
    subtomograms = project.items(run, "subtomograms")
    order = np.array([int(s.name[1:]) for s in subtomograms])
    found = np.array([s.particle.rotation_matrix for s in subtomograms])
    frame = _frame_of(found, truth.rotations[order])
    final = read_mrc(project.path(project.items(run, "average")[0].path))[0]
    in_frame = _shifted_to(volumes.rotate_volume(truth.truth, frame), final)
    refined_05, _ = resolution_to_truth_a(final, in_frame, PIXEL_A)
    builder = Reconstructor(BOX)
    builder.add(truth.data_ft, truth.weight, truth.rotations, truth.shifts_px)
    oracle_05, _ = resolution_to_truth_a(builder.reconstruct(), truth.truth, PIXEL_A)
    assert refined_05 <= 1.3 * oracle_05, f"map-to-truth {refined_05:.1f} Å, oracle {oracle_05:.1f}"
