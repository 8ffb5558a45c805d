"""Weighted reconstruction from poses against the map the particles were made from.

Particles: the ribosome template at 16 Å/px in a 24-voxel box, rotated by cubic splines,
±60° wedge and CTF (tests/averaging_scaffold.py). Cubic-spline rotation damps the highest
frequencies a little differently per pose, so agreement with the unrotated map is required
up to 3/4 of Nyquist.
"""

from __future__ import annotations

import numpy as np
import pytest
from averaging_scaffold import make_particles, template_map

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging.reconstruction import Reconstructor, reconstruct
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.geometry.rotations import random_rotations
from tomoweave.geometry.symmetry import symmetry_operators

BOX, PIXEL_A = 24, 16.0
GOOD_SHELLS = slice(1, int(0.75 * BOX // 2))


@pytest.fixture(scope="module")
def truth():
    return template_map("4v4r", BOX, PIXEL_A)


@pytest.fixture(scope="module")
def particles(truth):
    return make_particles(truth, 120, PIXEL_A, seed=2)


def test_reconstruction_from_true_poses_recovers_the_map(particles, truth):
    volume = reconstruct(particles.data_ft, particles.weight, particles.rotations,
                         particles.shifts_px)
    fsc = fourier.fourier_shell_correlation(volume, truth)
    assert fsc[GOOD_SHELLS].min() > 0.99
    # CTF² and wedge are divided out: the amplitude is the map's (within interpolation loss)
    assert float(volume.max()) == pytest.approx(float(truth.max()), rel=0.1)
    unshifted = reconstruct(particles.data_ft, particles.weight, particles.rotations)
    assert fourier.fourier_shell_correlation(unshifted, truth)[GOOD_SHELLS].min() < 0.9


def test_reconstructor_sums_batches(particles):
    whole = reconstruct(particles.data_ft, particles.weight, particles.rotations,
                        particles.shifts_px)
    first, second = Reconstructor(BOX), Reconstructor(BOX)
    first.add(particles.data_ft[:50], particles.weight[:50], particles.rotations[:50],
              particles.shifts_px[:50])
    second.add(particles.data_ft[50:], particles.weight[50:], particles.rotations[50:],
               particles.shifts_px[50:])
    first.merge(second)
    assert first.count == 120
    # float32 sums in another order: relative differences ~ 1e-6 · sqrt(120)
    assert np.allclose(first.reconstruct(), whole, atol=1e-4 * float(np.abs(whole).max()))


def test_symmetrised_reconstruction_is_the_symmetric_average(particles, truth):
    operators = symmetry_operators("D2")
    volume = reconstruct(particles.data_ft, particles.weight, particles.rotations,
                         particles.shifts_px, operators=operators)
    expected = np.mean([rotate_volume(truth, op) for op in operators], axis=0)
    fsc = fourier.fourier_shell_correlation(volume, expected)
    assert fsc[GOOD_SHELLS].min() > 0.98
    for op in operators[1:]:
        assert np.corrcoef(rotate_volume(volume, op).ravel(), volume.ravel())[0, 1] > 0.99


def test_identical_orientations_leave_no_gaps(truth):
    """One orientation fills only every other voxel of the padded grid; the gaps are filled by
    their neighbours (linear interpolation of the spectrum: less exact than many poses)."""
    same = np.repeat(random_rotations(1, np.random.default_rng(7)), 8, axis=0)
    particles = make_particles(truth, 8, PIXEL_A, rotations=same, tilt_range_deg=None,
                               defocus_range_a=None, seed=3)
    volume = reconstruct(particles.data_ft, particles.weight, particles.rotations,
                         particles.shifts_px)
    fsc = fourier.fourier_shell_correlation(volume, truth)
    assert fsc[GOOD_SHELLS].min() > 0.9 and fsc[1:3].min() > 0.985


def test_wiener_regulariser_follows_the_fsc(particles, truth):
    plain = reconstruct(particles.data_ft, particles.weight, particles.rotations,
                        particles.shifts_px)
    fsc = np.where(np.arange(BOX // 2 + 1) < 6, 0.99, 0.01)
    filtered = reconstruct(particles.data_ft, particles.weight, particles.rotations,
                           particles.shifts_px, fsc=fsc)
    power_plain = fourier.shell_sums(np.abs(np.fft.rfftn(plain)) ** 2, BOX)
    power_filtered = fourier.shell_sums(np.abs(np.fft.rfftn(filtered)) ** 2, BOX)
    assert np.allclose(power_filtered[1:5] / power_plain[1:5], 1.0, atol=0.05)
    assert np.all(power_filtered[8:11] / power_plain[8:11] < 0.05)
