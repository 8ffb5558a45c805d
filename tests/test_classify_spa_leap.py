"""The SPA leap: projections along Z, 2D classification with in-plane alignment, selection.

Acceptance (issue 15): a particle set with 30 % junk (random places of the tomogram: empty ice,
or a particle cut by the box edge; sim.mixtures), after 2D classification and selection of the
classes that look like particles, ≥ 90 % of the kept particles are true and ≥ 90 % of the true
particles are kept.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms.classification import spa_leap
from tomoweave.sim import mixtures


def test_projection_is_the_sum_along_z_of_the_box_or_its_slab():
    rng = np.random.default_rng(0)
    box = 16
    volume = rng.normal(size=(3, box, box, box)).astype(np.float32)
    data = scipy.fft.rfftn(volume, axes=(1, 2, 3))
    weight = np.ones(data.shape, np.float32)
    # resolution finer than the corner of the 2D spectrum: the low-pass passes everything
    whole = spa_leap.project_along_z(data, weight, pixel_size_a=1.0, resolution_a=1.0,
                                     wiener=0.0)
    assert np.allclose(whole, volume.sum(axis=1), atol=1e-4 * np.abs(volume).sum(axis=1).max())
    slab = spa_leap.project_along_z(data, weight, slab_px=6, pixel_size_a=1.0,
                                    resolution_a=1.0, wiener=0.0)
    expected = volume[:, box // 2 - 3: box // 2 + 3].sum(axis=1) * box / 6
    assert np.allclose(slab, expected, atol=1e-4 * np.abs(expected).max())


def test_classify_2d_groups_rotated_copies_of_two_shapes():
    box = 32
    y, x = np.indices((box, box)) - box // 2
    bar = ((np.abs(x) < 9) & (np.abs(y) < 3)).astype(np.float32)
    ring = ((np.hypot(x, y) < 8) & (np.hypot(x, y) > 4)).astype(np.float32) * 0.7
    ring[:, : box // 2 - 2] *= 0.2  # half a ring: not rotationally symmetric
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 120)
    angles = rng.uniform(0, 360, 120)
    images = np.stack([ndimage.rotate([bar, ring][t], a, reshape=False, order=1)
                       for t, a in zip(truth, angles, strict=True)])
    images += rng.normal(scale=0.5, size=images.shape).astype(np.float32)
    result = spa_leap.classify_2d(images, 2, mask_radius_px=12, angular_step_deg=10,
                                  iterations=10)
    agreement = np.mean(result.labels == truth)
    assert max(agreement, 1 - agreement) >= 0.95
    # the in-plane angle of one class's members is found to within the step (mod 180 for
    # the bar), up to the class average's own rotation
    members = (result.labels == result.labels[truth == 0][0]) & (truth == 0)
    relative = (angles[members] - result.angles_deg[members]) % 180.0
    spread = np.abs(((relative - relative[0]) + 90.0) % 180.0 - 90.0)
    assert np.median(spread) <= 10.0


def test_correlation_cut_needs_two_populations():
    rng = np.random.default_rng(2)
    one = rng.normal(0.5, 0.05, 200)
    assert spa_leap.correlation_cut(one) == -np.inf
    two = np.concatenate([rng.normal(0.15, 0.05, 60), rng.normal(0.9, 0.03, 140)])
    assert 0.3 < spa_leap.correlation_cut(two) < 0.75


def test_spa_leap_drops_junk():
    particles = mixtures.two_species(200, fraction_first=1.0, junk_fraction=0.3, seed=5)
    images = particles.images
    true = particles.labels != mixtures.JUNK
    assert true.sum() == 140
    projections = spa_leap.project_along_z(images.data_ft, images.weight, slab_px=20,
                                           pixel_size_a=images.pixel_size_a,
                                           resolution_a=25.0)
    classes = spa_leap.classify_2d(projections, 10, mask_radius_px=13, iterations=10)
    scores = spa_leap.particle_scores(classes.averages, particle_radius_px=11)
    cut = spa_leap.correlation_cut(classes.scores)
    assert np.isfinite(cut)  # particles and junk correlate differently with their classes
    selected = spa_leap.select_classes(scores, labels=classes.labels, scores=classes.scores,
                                       cut=cut)
    kept = spa_leap.kept_particles(classes.labels, selected, scores=classes.scores, cut=cut)
    assert np.mean(true[kept]) >= 0.9  # kept particles that are true
    assert np.mean(kept[true]) >= 0.9  # true particles that are kept
    assert len(classes.history) >= 1 and sum(classes.history[-1]["sizes"]) == 200
