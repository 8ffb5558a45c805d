"""Template picking on scenes tomoweave's simulator did not make, with the automatic threshold.

Scenes (tomoweave.sim.picking_scenes): copies of a real map at random positions and
orientations, distractors of similar size and small crowders, a missing wedge sampled from the
tilt planes, a CTF with a B-factor, noise coloured like a WBP's. The wedge, CTF and rotation
there are written independently of the matcher's. Each scene differs from the others in
template, pixel size, tilt range, CTF handling, density, contrast features (gold, vesicle).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_pick_support import TEMPLATES

from tomoweave.algorithms import template_matching as tm
from tomoweave.algorithms import template_picking as tp
from tomoweave.algorithms import volumes
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry import sampling
from tomoweave.geometry.rotations import random_rotations
from tomoweave.sim.metrics import match_positions
from tomoweave.sim.picking_scenes import SceneSpec, _render, load_map, make_scene

DIAMETER_A = {"4v4r": 300.0, "3j9i": 200.0}
STEP_DEG = 30.0


def _pick(scene, diameter_a, step_deg=STEP_DEG):
    spec = scene.spec
    template, template_pixel_a = read_mrc(TEMPLATES / f"{spec.target}.mrc")
    pixel = spec.pixel_size_a
    whitening = tp.whitening_profile(scene.tomogram, spec.tilt_range_deg)
    prepared = tp.prepare_search_template(
        template, template_pixel_a, pixel, diameter_a, tilt_range_deg=spec.tilt_range_deg,
        lowpass_a=2 * pixel, ctf={"defocus_a": spec.defocus_a,
                                  "phase_flipped": spec.phase_flipped}, whitening=whitening)
    return tp.pick_with_template(scene.tomogram, pixel, prepared, step_deg, diameter_a,
                                 lowpass_a=2 * pixel, whitening=whitening)


def _scores(scene, result, diameter_a):
    centre = np.array(scene.spec.shape_zyx[::-1]) // 2
    found_a = (result.positions_xyz_px - centre) * scene.spec.pixel_size_a
    rows, cols = match_positions(scene.positions_a, found_a, 0.25 * diameter_a)
    precision = len(rows) / max(1, len(found_a))
    recall = len(rows) / len(scene.positions_a)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    errors = [sampling.orientation_error_deg(scene.rotations[i], result.rotations[j])
              for i, j in zip(rows, cols, strict=True)]
    return f1, precision, recall, np.array(errors)


def test_scene_rotation_agrees_with_rotate_volume():
    """The scene's renderer and the matcher's rotator are separate code with one convention."""
    density = load_map("4v4r", 20.0)
    box = density.shape[0]
    for rotation in random_rotations(3, np.random.default_rng(1)):
        rendered = np.zeros_like(density)
        _render(rendered, density, np.full(3, box // 2, dtype=float), rotation)
        rotated = volumes.rotate_volume(density, rotation, order=3)
        inside = volumes.spherical_mask(box, box / 2 - 2) > 0.5
        assert np.corrcoef(rendered[inside], rotated[inside])[0, 1] > 0.99


def test_search_equals_direct_local_ncc():
    """The pruned, threaded FFT search gives the NCC computed voxel by voxel in real space."""
    rng = np.random.default_rng(3)
    shape = (24, 30, 28)
    tomogram = rng.normal(size=shape).astype(np.float32)
    box = 10
    mask = volumes.spherical_mask(box, 3.5, soft_px=1.0)
    template = tm.PreparedTemplate(rng.normal(size=(box,) * 3).astype(np.float32), mask, None)
    rotations = sampling.angular_sampling(60.0)[:5]
    result = tm.match_template(tomogram, template, rotations, workers=2)
    single = tm.match_template(tomogram, template, rotations, workers=1)
    assert np.array_equal(result.scores, single.scores)  # threads do not change a bit
    assert np.array_equal(result.rotation_index, single.rotation_index)
    centred = tomogram - tomogram.mean()
    boxes = [template.rotated(r) for r in rotations]
    half = box // 2
    for z, y, x in rng.integers([half + 1] * 3, np.array(shape) - half - 1, size=(12, 3)):
        patch = centred[z - half:z - half + box, y - half:y - half + box, x - half:x - half + box]
        mean = (patch * mask).sum() / mask.sum()
        std = np.sqrt((mask * (patch - mean) ** 2).sum() / mask.sum())
        direct = [(b * patch).sum() / (mask.sum() * std) for b in boxes]
        # float32 FFTs over ~2e4 points: rounding ~1e-6 relative, well under 1e-4
        assert result.scores[z, y, x] == pytest.approx(max(direct), abs=1e-4)
        assert result.rotation_index[z, y, x] == int(np.argmax(direct))


def test_pure_noise_gives_about_the_expected_false_picks():
    """No particle at all: the fitted noise tail lets through about n_false peaks, not dozens."""
    spec = SceneSpec(n_targets=0, distractors={}, crowders={"3qm1": 30}, shape_zyx=(64, 128, 128),
                     snr=1.0, seed=7)
    scene = make_scene(spec)
    # no target: scale the noise to the crowders' signal instead (snr is relative to targets)
    assert np.isfinite(scene.tomogram).all()
    result = _pick(scene, 300.0, step_deg=45.0)
    assert len(result.scores) <= 3, result.messages  # 1 expected; the fit errs on the safe side
    assert result.noise is not None and result.threshold == pytest.approx(result.noise.threshold)


SCENES = {
    # 70S ribosomes among proteasomes and RuBisCO at 20 Å, ±60°, CTF at 4 µm
    "ribosome_20A": dict(shape_zyx=(80, 160, 160), n_targets=20,
                         distractors={"3j9i": 10, "1bxn": 10}, crowders={"3qm1": 40}, snr=0.1),
    # 15 Å, an asymmetric tilt range, 3 µm, lower SNR, other distractors
    "ribosome_15A_asymmetric": dict(shape_zyx=(96, 192, 192), pixel_size_a=15.0, n_targets=20,
                                    distractors={"3j9i": 12, "6pxm": 10}, crowders={"3qm1": 60},
                                    tilt_range_deg=(-50.0, 65.0), snr=0.05, defocus_a=30000.0,
                                    seed=1),
    # another template: 20S proteasomes at 12 Å among ribosomes, RuBisCO and 6pxm
    "proteasome_12A": dict(target="3j9i", shape_zyx=(80, 160, 160), pixel_size_a=12.0,
                           n_targets=25, distractors={"4v4r": 8, "1bxn": 15, "6pxm": 10},
                           crowders={"3qm1": 40}, snr=0.15, seed=4),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENES))
def test_automatic_threshold_reaches_f1_0_9(name):
    spec = SceneSpec(**SCENES[name])
    scene = make_scene(spec)
    diameter_a = DIAMETER_A[spec.target]
    result = _pick(scene, diameter_a)
    f1, precision, recall, errors = _scores(scene, result, diameter_a)
    print(f"\n{name}: F1 {f1:.3f} (precision {precision:.3f}, recall {recall:.3f}), "
          f"{len(result.scores)} picks for {len(scene.positions_a)}, threshold "
          f"{result.threshold:.3f}, median orientation error {np.median(errors):.1f}°")
    assert f1 >= 0.9, result.messages
    if spec.target == "4v4r":  # C1: orientations are defined; 3j9i is D7 (axis not on z here)
        assert np.median(errors) <= STEP_DEG


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 5])
def test_crowded_scene_with_gold_and_vesicle_reaches_f1_0_9(seed):
    """45 ribosomes among proteasomes and crowders, gold beads and a vesicle, phase flipped.

    Seed 3 once lost four fifths of its particles: the best eight ribosomes, close together
    by chance, passed for a population of their own and the threshold was set between them
    and the others (F1 0.30; on seed 5 the old rule's threshold was 0.262 instead of
    0.204); the split now compares laws cut at the noise threshold. Measured: F1 0.956,
    0.989, 0.929 on seeds 2, 3, 5. The gold mask (dilated by the particle radius) is needed:
    halving its dilation lets in ~10 false picks per scene.
    """
    spec = SceneSpec(shape_zyx=(80, 160, 160), n_targets=45, distractors={"3j9i": 15},
                     crowders={"3qm1": 40}, phase_flipped=True, snr=0.15, n_gold=5,
                     n_vesicles=1, seed=seed)
    scene = make_scene(spec)
    result = _pick(scene, DIAMETER_A["4v4r"])
    f1, precision, recall, errors = _scores(scene, result, DIAMETER_A["4v4r"])
    print(f"\ncrowded with gold and vesicle, seed {seed}: F1 {f1:.3f} (precision "
          f"{precision:.3f}, recall {recall:.3f}), median orientation error "
          f"{np.median(errors):.1f}°")
    assert f1 >= 0.9, result.messages
    assert np.median(errors) <= STEP_DEG
