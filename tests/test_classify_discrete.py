"""3D classification and multi-reference alignment on simulated two-species mixtures.

Particles of two templates of similar size (proteasome 3j9i, 6pxm; sim.mixtures at the
sta_test preset's dose, CTF and ice) at random orientations, with their true poses (as after a
refinement); the issue's acceptance: adjusted Rand index ≥ 0.8 against the truth, the 20 %
class found, each class average closest to its own truth map.
"""

from __future__ import annotations

import numpy as np
import pytest

from tomoweave.algorithms.averaging.sources import ImageSource
from tomoweave.algorithms.classification import classes3d
from tomoweave.sim import mixtures
from tomoweave.sim.metrics import adjusted_rand_index

DIAMETER_A = 240.0


def _source(particles: mixtures.ParticleSet) -> ImageSource:
    images = particles.images
    return ImageSource.from_arrays(images.data_ft, images.weight, images.pixel_size_a)


def _closest_truth(result: classes3d.ClassifyResult, maps: np.ndarray) -> np.ndarray:
    """(K, S) correlation of each class map with each truth map."""
    return np.array([[np.corrcoef(m.ravel(), t.ravel())[0, 1] for t in maps]
                     for m in result.maps])


def test_adjusted_rand_index_known_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(labels, [5, 5, 3, 3, 9, 9]) == pytest.approx(1.0)
    # sklearn's documented example: [0, 0, 1, 1] vs [0, 0, 1, 2] -> 0.5714...
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)
    assert abs(adjusted_rand_index(a, b)) < 0.01  # independent: expectation 0, sd ~ 1/N


def test_settings_refuse_unknown_modes():
    with pytest.raises(ValueError, match="assignment"):
        classes3d.ClassifySettings(classes=2, particle_diameter_a=200, assignment="fuzzy")
    with pytest.raises(ValueError, match="alignment"):
        classes3d.ClassifySettings(classes=2, particle_diameter_a=200, alignment="global")


def test_soft_classification_separates_a_50_50_mixture():
    particles = mixtures.two_species(120, fraction_first=0.5, seed=1)
    source = _source(particles)
    settings = classes3d.ClassifySettings(classes=2, particle_diameter_a=DIAMETER_A,
                                          assignment="soft", alignment="none",
                                          max_iterations=6)
    halves = 1 + np.arange(source.count) % 2
    state = classes3d.initial_state(source, particles.rotations, np.zeros((source.count, 3)),
                                    halves, settings)
    result = classes3d.classify(source, state, settings)
    assert adjusted_rand_index(result.labels, particles.labels) >= 0.8
    correlation = _closest_truth(result, particles.maps)
    # each class is closest to a different truth map, and each truth map's closest class
    # is the one closest to it
    best_truth = np.argmax(correlation, axis=1)
    assert sorted(best_truth.tolist()) == [0, 1]
    assert all(best_truth[np.argmax(correlation[:, j])] == j for j in (0, 1))
    assert np.allclose(result.state.responsibilities.sum(axis=1), 1.0)
    assert len(state.history) >= 1 and all(f is not None for f in result.fsc)


def test_classification_repairs_a_partition_with_a_third_wrong():
    """References from a partition with 35 % of the labels wrong: the iterations (not the
    seeding) have to find the species."""
    from tomoweave.algorithms.averaging.reconstruction import reconstruct

    particles = mixtures.two_species(120, fraction_first=0.5, seed=4)
    source = _source(particles)
    rng = np.random.default_rng(1)
    wrong = rng.random(source.count) < 0.35
    start = np.where(wrong, 1 - particles.labels, particles.labels)
    images = particles.images
    references = np.stack([reconstruct(images.data_ft[start == k], images.weight[start == k],
                                       particles.rotations[start == k]) for k in (0, 1)])
    settings = classes3d.ClassifySettings(classes=2, particle_diameter_a=DIAMETER_A,
                                          assignment="hard", max_iterations=8)
    halves = 1 + np.arange(source.count) % 2
    assert adjusted_rand_index(start, particles.labels) < 0.2
    state = classes3d.initial_state(source, particles.rotations, np.zeros((source.count, 3)),
                                    halves, settings, references=references)
    result = classes3d.classify(source, state, settings)
    assert adjusted_rand_index(result.labels, particles.labels) >= 0.8
    occupancy = [record["occupancy"] for record in result.state.history]
    assert len(occupancy) >= 2 and all(len(o) == 2 for o in occupancy)


def test_mra_finds_the_20_percent_class_with_local_alignment():
    particles = mixtures.two_species(150, fraction_first=0.8, seed=2)
    source = _source(particles)
    rng = np.random.default_rng(5)
    from tomoweave.geometry.sampling import rotations_from_vectors_deg

    axes = rng.normal(size=(source.count, 3))
    axes *= 4.0 / np.linalg.norm(axes, axis=1, keepdims=True)  # poses 4° off the truth
    start = np.einsum("nij,njk->nik", particles.rotations, rotations_from_vectors_deg(axes))
    settings = classes3d.ClassifySettings(classes=2, particle_diameter_a=DIAMETER_A,
                                          angular_step_deg=4.0, local_range_deg=4.0,
                                          shift_range_a=10.0, max_iterations=6)
    halves = 1 + np.arange(source.count) % 2
    state = classes3d.initial_state(source, start, np.zeros((source.count, 3)), halves,
                                    settings)
    result = classes3d.multi_reference_alignment(source, state, settings)
    labels = result.labels
    assert adjusted_rand_index(labels, particles.labels) >= 0.8
    minor = int(np.argmax(_closest_truth(result, particles.maps)[:, 1]))
    found = np.mean(labels == minor)
    assert 0.15 <= found <= 0.25  # the 20 % class, found at its size
    assert np.all(np.isin(np.unique(result.state.responsibilities), [0.0, 1.0]))  # hard
    correlation = _closest_truth(result, particles.maps)
    assert np.argmax(correlation[minor]) == 1 and np.argmax(correlation[1 - minor]) == 0
    # local alignment moved the poses towards the truth
    from tomoweave.geometry.sampling import orientation_errors_deg

    before = orientation_errors_deg(start, particles.rotations)
    after = orientation_errors_deg(result.state.rotations, particles.rotations)
    assert np.median(after) < np.median(before)


def test_resume_from_a_checkpoint_continues_the_same_iterations():
    """Two iterations, the state through JSON (as context.save_checkpoint stores it), two more:
    the same labels, references and history as four iterations in one go."""
    import json

    particles = mixtures.two_species(60, fraction_first=0.5, seed=7)
    source = _source(particles)
    halves = 1 + np.arange(source.count) % 2
    settings = classes3d.ClassifySettings(classes=2, particle_diameter_a=DIAMETER_A,
                                          max_iterations=4, min_changed_fraction=0.0)
    start = classes3d.initial_state(source, particles.rotations, np.zeros((source.count, 3)),
                                    halves, settings)
    values, arrays = start.to_checkpoint()
    straight = classes3d.classify(source, classes3d.ClassifyState.from_checkpoint(
        json.loads(json.dumps(values)), {k: v.copy() for k, v in arrays.items()}), settings)
    from dataclasses import replace

    first = classes3d.classify(source, start, replace(settings, max_iterations=2))
    values, arrays = first.state.to_checkpoint()
    resumed = classes3d.ClassifyState.from_checkpoint(json.loads(json.dumps(values)), arrays)
    assert resumed.iteration == 2
    second = classes3d.classify(source, resumed, settings)
    assert [h["iteration"] for h in second.state.history] == [1, 2, 3, 4]
    assert np.array_equal(second.labels, straight.labels)
    assert np.allclose(second.state.references, straight.state.references, atol=1e-5 * float(
        np.abs(straight.state.references).max()))
