"""Pruning of picked particles against known truth: consensus, duplicates, normals, vesicles."""

import numpy as np

from tomoweave.algorithms import particle_pruning as pp
from tomoweave.algorithms.membranes import rotation_from_normal
from tomoweave.geometry.rotations import random_rotations, rotation_z


def _true_positions(rng, count=60, min_distance_a=150.0, box_a=(2000.0, 2000.0, 600.0)):
    points = []
    while len(points) < count:
        candidate = rng.uniform(0, box_a)
        if all(np.linalg.norm(candidate - p) >= min_distance_a for p in points):
            points.append(candidate)
    return np.array(points)


def test_consensus_keeps_true_and_removes_false():
    rng = np.random.default_rng(0)
    truth = _true_positions(rng)
    picker_a = truth + rng.normal(0, 12.0, truth.shape)
    false = rng.uniform(0, (2000.0, 2000.0, 600.0), size=(int(0.3 * len(truth) / 0.7), 3))
    picker_b = np.concatenate([truth + rng.normal(0, 12.0, truth.shape), false])
    result = pp.consensus([picker_a, picker_b], tolerance_a=60.0, min_sets=2)
    kept = np.array([np.mean([(picker_a, picker_b)[s][i] for s, i in g], axis=0)
                     for g in result.groups])
    near_true = np.min(np.linalg.norm(kept[:, None] - truth[None], axis=2), axis=1) <= 60.0
    true_kept = np.sum(np.min(np.linalg.norm(truth[:, None] - kept[None], axis=2), axis=1) <= 60)
    false_kept = np.sum(~near_true)  # kept groups that are not a true particle
    assert true_kept / len(truth) >= 0.95
    assert 1 - false_kept / len(false) >= 0.80
    assert result.statistics["set_sizes"] == [len(picker_a), len(picker_b)]
    assert result.statistics["groups_by_support"][2] == len(result.groups)


def test_consensus_k_of_three():
    rng = np.random.default_rng(1)
    truth = _true_positions(rng, 30)
    sets = [truth + rng.normal(0, 8, truth.shape) for _ in range(3)]
    sets[2] = sets[2][:20]  # the third picker misses 10
    two = pp.consensus(sets, 50.0, 2)
    three = pp.consensus(sets, 50.0, 3)
    assert len(two.groups) == 30
    assert len(three.groups) == 20


def test_remove_duplicates_restores_count():
    rng = np.random.default_rng(2)
    truth = _true_positions(rng, 50)
    duplicates = truth[:15] + rng.normal(0, 10.0, (15, 3))
    positions = np.concatenate([truth, duplicates])
    scores = rng.uniform(0.2, 0.6, len(positions))
    merged, members = pp.remove_duplicates(positions, 40.0, scores)
    assert len(merged) == len(truth)
    error = np.min(np.linalg.norm(merged[:, None] - truth[None], axis=2), axis=1)
    assert error.max() < 20.0
    assert sorted(np.concatenate(members).tolist()) == list(range(len(positions)))


def _sphere_points(rng, count, radius_a, centre_a):
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return centre_a + radius_a * directions, directions


def test_filter_normal_precision_recall():
    rng = np.random.default_rng(3)
    positions, normals = _sphere_points(rng, 200, 400.0, np.array([0.0, 0.0, 0.0]))
    rotations, wrong = [], np.zeros(len(positions), dtype=bool)
    wrong[rng.choice(len(positions), 40, replace=False)] = True
    for normal, is_wrong in zip(normals, wrong, strict=True):
        if is_wrong:  # axis at least 45° away from the normal
            while True:
                rotation = random_rotations(1, rng)[0]
                if np.degrees(np.arccos(np.clip(rotation[:, 2] @ normal, -1, 1))) > 45:
                    break
        else:  # the normal with up to ~8° of picking error and any in-plane angle
            tilt = rotation_from_normal(normal + rng.normal(0, 0.07, 3))
            rotation = tilt @ rotation_z(rng.uniform(0, 360))
        rotations.append(rotation)
    estimated = pp.normals_from_neighbours(positions, neighbours=10)
    keep = pp.filter_by_normal(np.array(rotations), estimated, tolerance_deg=25.0)
    true_positive = np.sum(keep & ~wrong)
    precision = true_positive / keep.sum()
    recall = true_positive / np.sum(~wrong)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_fit_vesicle_drops_far_particles():
    rng = np.random.default_rng(4)
    radii = np.array([420.0, 350.0, 300.0])
    directions = rng.normal(size=(120, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    on_surface = directions * radii + np.array([100.0, -50.0, 20.0])
    on_surface += rng.normal(0, 8.0, on_surface.shape)
    far = on_surface[:15] * 1.5
    points = np.concatenate([on_surface, far])
    keep, ellipsoid = pp.ellipsoid_inliers(points, max_distance_a=40.0)
    assert ellipsoid is not None
    assert np.allclose(np.sort(ellipsoid.radii_a), np.sort(radii), rtol=0.05)
    assert keep[:120].mean() >= 0.97
    assert not keep[120:].any()


def test_filters_by_region_and_mask():
    positions = np.array([[0.0, 0.0, 0.0], [500.0, 0.0, 0.0], [-90.0, 40.0, 10.0]])
    inside = pp.inside_region(positions, [-100, -100, -100], [100, 100, 100])
    assert inside.tolist() == [True, False, True]
    mask = np.zeros((20, 30, 40), dtype=np.uint8)
    mask[10, 15, 20] = 1  # the centre voxel (N // 2) of a 10 Å grid
    assert pp.inside_mask(positions, mask, 10.0).tolist() == [True, False, False]
