"""Template matching against the simulator's ground truth, plus its building blocks.

The acceptance test simulates the "test" preset (20 ribosomes 4v4r among proteasomes, RuBisCO,
gold beads and a vesicle, at the preset's dose and noise), reconstructs it by WBP at 20 Å/voxel
with the true alignment, and picks ribosomes with the 4v4r map from shared/data.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_pick_support import TEMPLATES, simulated_wbp_tomogram

from tomoweave.algorithms import fourier, volumes
from tomoweave.algorithms import template_matching as tm
from tomoweave.algorithms.template_picking import (
    pick_with_template,
    prepare_search_template,
    rescale_factor_checked,
)
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry import sampling
from tomoweave.geometry.rotations import random_rotations, rotation_angle_between_deg
from tomoweave.model import Particle
from tomoweave.sim.metrics import orientation_errors_deg, picking_scores

RIBOSOME_DIAMETER_A = 300.0
ANGULAR_STEP_DEG = 30.0


def test_angular_sampling_covers_so3_uniformly():
    rotations = sampling.angular_sampling(30.0)
    probes = random_rotations(300, np.random.default_rng(0))
    traces = np.einsum("pji,rjk->prik", probes, rotations).trace(axis1=2, axis2=3)
    worst = np.degrees(np.arccos(np.clip((traces.max(axis=1) - 1) / 2, -1, 1)))
    assert rotation_angle_between_deg(probes[0], rotations[np.argmax(traces[0])]) == \
        pytest.approx(worst[0], abs=1e-6)
    # every orientation lies within about one step of the grid
    assert np.max(worst) <= 30.0
    assert np.median(worst) <= 20.0
    assert len(sampling.angular_sampling(30.0, "C4")) * 4 <= len(rotations) + 4 * 12


def test_wedge_mask_matches_tilt_planes():
    mask = fourier.wedge_mask((32, 32, 32), -40.0, 60.0)
    kz, kx = 5, 5  # 45°: inside both limits
    assert mask[kz, 0, kx] == 1
    assert mask[-5, 0, 5] == 0  # -45° is outside -40 … 60
    assert mask[(-5) % 32, 0, 5] == mask[-5, 0, 5]
    assert mask[10, 3, 2] == 0  # ~79°: missing wedge


def test_rescale_rejects_absurd_pixel_size():
    assert rescale_factor_checked(10.0, 20.0) == 0.5
    with pytest.raises(ValueError, match="outside"):
        rescale_factor_checked(1.0, 20.0)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return simulated_wbp_tomogram(tmp_path_factory.mktemp("sim"), binning=2)


def test_template_matching_finds_ribosomes(simulated):
    tomogram, pixel_size_a, truth = simulated
    template, template_pixel_a = read_mrc(TEMPLATES / "4v4r.mrc")
    tilts = [t.y_tilt_deg for t in truth.tilts]
    defocus_a = float(np.mean([0.5 * (t.defocus_u_a + t.defocus_v_a) for t in truth.tilts]))
    prepared = prepare_search_template(template, template_pixel_a, pixel_size_a,
                                       RIBOSOME_DIAMETER_A, tilt_range_deg=(min(tilts), max(tilts)),
                                       lowpass_a=2 * pixel_size_a, ctf={"defocus_a": defocus_a})
    result = pick_with_template(tomogram, pixel_size_a, prepared, ANGULAR_STEP_DEG,
                                RIBOSOME_DIAMETER_A, lowpass_a=2 * pixel_size_a)
    centre = np.array(tomogram.shape[::-1]) // 2
    found_a = (result.positions_xyz_px - centre) * pixel_size_a
    tolerance_a = 0.5 * (250.0 / 2)  # half the ribosome's radius
    scores = picking_scores(truth, found_a, tolerance_a, template="4v4r")
    beta = 4.0
    p, r = scores["precision"], scores["recall"]
    f_beta = (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0
    particles = [Particle(name=f"p{i}", tomogram=truth.name, position_a=tuple(a),
                          rotation=rot.tolist()) for i, (a, rot) in
                 enumerate(zip(found_a, result.rotations, strict=True))]
    errors = orientation_errors_deg(truth, particles, tolerance_a, template="4v4r")
    print(f"\ntemplate matching: F1 {scores['f1']:.3f} (precision {p:.3f}, recall {r:.3f}), "
          f"CZII F-beta(4) {f_beta:.3f}, median orientation error {np.median(errors):.1f}° "
          f"(step {ANGULAR_STEP_DEG}°), {result.n_rotations} orientations, "
          f"threshold {result.threshold:.3f}")
    assert scores["f1"] >= 0.9, scores
    assert np.median(errors) <= 1.5 * ANGULAR_STEP_DEG


def test_tiled_search_equals_one_tile():
    """Overlapping tiles give the same scores as one tile over the whole volume."""
    from test_pick_support import degrade, load_template, place_particles

    rng = np.random.default_rng(5)
    template = load_template("4v4r", 20.0, 18)
    signal, _, _ = place_particles((30, 60, 70), template, 4, 17, rng)
    tomogram = degrade(signal, rng, snr=1.0, contrast=-1.0)
    prepared = tm.PreparedTemplate(-template, volumes.spherical_mask(18, 7.5), None)
    rotations = sampling.angular_sampling(60.0)[:6]
    whole = tm.match_template(tomogram, prepared, rotations)
    tiled = tm.match_template(tomogram, prepared, rotations, max_tile_voxels=40**3)
    assert len(tm._tile_grid(tomogram.shape, 10, 40**3)) > 1
    # NCC in [-1, 1] from float32 FFTs of different sizes: rounding ~ eps * log2(N) * the
    # condition of the local variance (mean² / variance under the mask, < 10 here); 2e-4 is
    # > 100x that on any CPU, while a tile misplaced by one voxel changes scores by > 0.05
    assert np.allclose(whole.scores, tiled.scores, atol=2e-4)
    scored = whole.scores > -1  # the faces' bands, where the template reaches across, are not
    assert np.array_equal(scored, tiled.scores > -1) and scored.mean() > 0.1
    assert np.mean(whole.rotation_index[scored] == tiled.rotation_index[scored]) > 0.999
