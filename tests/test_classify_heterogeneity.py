"""Continuous heterogeneity (wedge-compensated PCA), the missing-wedge test, clustering.

- A hinge (sim.mixtures.hinge_motion: the end domain of 3j9i turned by 0–20°, uniform): the
  first component follows the true angle (|Spearman ρ| ≥ 0.8) and the averages at the two ends
  of the trajectory differ where the domain moves.
- Identical particles seen from two sides (beam within 25° of the reference's x or z axis): a
  naive real-space k-means splits them by orientation, classification does not (ARI against
  the orientation groups ≤ 0.1).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from scipy.stats import spearmanr

from tomoweave.algorithms import fourier, volumes
from tomoweave.algorithms.averaging.sources import ImageSource
from tomoweave.algorithms.classification import classes3d, clustering, pca
from tomoweave.sim import mixtures
from tomoweave.sim.metrics import adjusted_rand_index


def _source(particles: mixtures.ParticleSet) -> ImageSource:
    images = particles.images
    return ImageSource.from_arrays(images.data_ft, images.weight, images.pixel_size_a)


def test_kmeans_and_mixture_recover_separated_groups():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    truth = rng.integers(0, 3, 600)
    points = centres[truth] + rng.normal(size=(600, 2))
    found = clustering.kmeans(points, 3)
    assert adjusted_rand_index(found.labels, truth) > 0.95
    mixture = clustering.gaussian_mixture(points, 3)
    assert adjusted_rand_index(mixture.labels, truth) > 0.95
    assert np.allclose(mixture.responsibilities.sum(axis=1), 1.0)
    # each fitted mean within 4 standard errors (1/sqrt(200)) of a true centre
    nearest = np.min(np.linalg.norm(mixture.centres[:, None] - centres[None], axis=2), axis=1)
    assert np.all(nearest < 4 * np.sqrt(2.0 / 150))
    with pytest.raises(ValueError, match="points"):
        clustering.kmeans(points[:2], 3)


def test_pca_first_component_follows_the_hinge_angle():
    particles = mixtures.hinge_motion(120, seed=1)
    source = _source(particles)
    shifts = np.zeros((source.count, 3))
    spectra = pca.reference_frame_spectra(source, particles.rotations, shifts, resolution_a=25.0)
    analysis = pca.principal_components(spectra, components=3)
    rho = spearmanr(analysis.coordinates[:, 0], particles.hinge_deg)[0]
    assert abs(rho) >= 0.8
    assert analysis.explained[0] > analysis.explained[1]
    assert analysis.eigenvolumes.shape == (3,) + (spectra["box_px"],) * 3
    maps, which = pca.trajectory_averages(source, particles.rotations, shifts,
                                          analysis.coordinates[:, 0], bins=4)
    assert np.bincount(which).tolist() == [30, 30, 30, 30]
    pixel = source.pixel_size_a
    moved = pca.lowpass(maps[-1] - maps[0], pixel, 30.0) * np.sign(rho)  # low -> high angle
    truth = pca.lowpass(particles.maps[1] - particles.maps[0], pixel, 30.0)
    assert np.corrcoef(moved.ravel(), truth.ravel())[0, 1] >= 0.4
    # the difference lives where the domain moves: mean |difference| there vs on the body
    domain = np.abs(truth) > 0.2 * np.abs(truth).max()
    body = (particles.maps[0] > 0.2 * particles.maps[0].max()) & ~domain
    assert np.abs(moved[domain]).mean() > 2.0 * np.abs(moved[body]).mean()


def _naive_labels(particles: mixtures.ParticleSet, resolution_a: float) -> np.ndarray:
    """k-means (K=2) of the real-space boxes turned into the reference frame, low-passed: no
    missing-wedge compensation."""
    box = particles.images.box_px
    lowpass = fourier.lowpass_filter((box,) * 3, particles.images.pixel_size_a, resolution_a)
    boxes = [volumes.rotate_volume(
        scipy.fft.irfftn(spectrum * lowpass, s=(box,) * 3).astype(np.float32), rotation.T,
        order=1).ravel() for spectrum, rotation in zip(particles.images.data_ft,
                                                       particles.rotations, strict=True)]
    return clustering.kmeans(np.array(boxes), 2, starts=4).labels


def test_missing_wedge_compensation_keeps_orientations_together():
    count = 100
    rng = np.random.default_rng(4)
    rotations = mixtures.rotations_viewing_along(np.eye(3)[[0, 2]], 25.0, count, rng)
    orientation = np.arange(count) % 2  # rotations_viewing_along alternates the two sides
    particles = mixtures.two_species(count, fraction_first=1.0, rotations=rotations, seed=3)
    assert np.all(particles.labels == 0)
    assert adjusted_rand_index(_naive_labels(particles, 30.0), orientation) >= 0.5
    source = _source(particles)
    halves = 1 + (np.arange(count) // 2) % 2  # both orientations in both halves
    for assignment in ("soft", "hard"):
        settings = classes3d.ClassifySettings(classes=2, particle_diameter_a=240.0,
                                              assignment=assignment, max_iterations=4)
        state = classes3d.initial_state(source, rotations, np.zeros((count, 3)), halves,
                                        settings)
        result = classes3d.classify(source, state, settings)
        assert adjusted_rand_index(result.labels, orientation) <= 0.1
    spectra = pca.reference_frame_spectra(source, rotations, np.zeros((count, 3)),
                                          resolution_a=30.0)
    coordinates = pca.principal_components(spectra, components=2).coordinates
    assert adjusted_rand_index(clustering.kmeans(coordinates, 2).labels, orientation) <= 0.1
