"""Subtraction: particles = complex + a planted membrane slab, at known poses with a missing
wedge, a CTF, a per-particle contrast and noise. After subtracting the average inside a mask on
the complex, the remainder's correlation with the complex drops by ≥ 90 % and its correlation
with the membrane keeps ≥ 95 % (issue 16's acceptance). Correlations are taken against the
noise-free premultiplied model of each part (W · part at the pose), so noise only adds spread.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.postprocess.subtract import map_at_pose, subtract_from_particles
from tomoweave.algorithms.volumes import soft_mask_from_map
from tomoweave.geometry.rotations import random_rotations
from tomoweave.sim.oracle import truth_map

BOX, PIXEL_A = 40, 8.0


def membrane_slab(box: int, z_px: float, thickness_px: float) -> np.ndarray:
    z = np.arange(box, dtype=np.float32)[:, None, None] - box // 2
    slab = np.exp(-0.5 * ((z - z_px) / (0.5 * thickness_px)) ** 2)
    return np.broadcast_to(slab, (box,) * 3).astype(np.float32) * 0.6


def correlation(data: np.ndarray, model: np.ndarray) -> float:
    weight = fourier.rfft_multiplicity(data.shape[0])
    cross = np.sum(weight * (np.conj(model) * data).real)
    return float(cross / np.sqrt(np.sum(weight * np.abs(model) ** 2)
                                 * np.sum(weight * np.abs(data) ** 2)))


def test_subtraction_removes_the_complex_and_keeps_the_membrane():
    rng = np.random.default_rng(0)
    complex_ = truth_map("1bxn", BOX, PIXEL_A)
    assert complex_.max() > 0.5
    membrane = membrane_slab(BOX, 13.0, 4.0)
    average = 2.0 * (complex_ + membrane)  # an average on another density scale
    mask = soft_mask_from_map(complex_, 0.02, dilation_px=2, soft_px=3)
    count = 6
    rotations = random_rotations(count, rng)
    shifts = rng.uniform(-1.5, 1.5, (count, 3))
    contrast = rng.uniform(0.6, 1.4, count)
    data = np.empty((count, BOX, BOX, BOX // 2 + 1), np.complex64)
    weight = np.empty(data.shape, np.float32)
    parts = {"complex": [], "membrane": []}
    for i in range(count):
        transfer = fourier.wedge_ctf_weight(BOX, PIXEL_A, (-60.0, 60.0), None,
                                            {"defocus_a": rng.uniform(30000, 50000)})
        for name, volume in (("complex", complex_), ("membrane", membrane)):
            parts[name].append(transfer**2 * map_at_pose(volume, rotations[i], shifts[i]))
        clean = contrast[i] * transfer * (map_at_pose(complex_, rotations[i], shifts[i])
                                          + map_at_pose(membrane, rotations[i], shifts[i]))
        noise = 0.05 * scipy.fft.rfftn(rng.standard_normal((BOX,) * 3).astype(np.float32))
        data[i], weight[i] = transfer * (clean + transfer * noise), transfer**2
    remainder, scales = subtract_from_particles(data, weight, average, rotations, shifts,
                                                mask=mask)
    assert scales == pytest.approx(contrast / 2.0, rel=0.02)
    for i in range(count):
        before = correlation(data[i], parts["complex"][i])
        after = correlation(remainder[i], parts["complex"][i])
        assert abs(after) <= 0.1 * before
        membrane_before = correlation(data[i], parts["membrane"][i])
        membrane_after = correlation(remainder[i], parts["membrane"][i])
        assert membrane_after >= 0.95 * membrane_before


def test_subtraction_without_a_mask_leaves_only_noise():
    rng = np.random.default_rng(1)
    reference = truth_map("1bxn", 32, 10.0)
    rotations = random_rotations(2, rng)
    weight = np.ones((2, 32, 32, 17), np.float32)
    data = np.stack([map_at_pose(reference, r, np.zeros(3)) for r in rotations])
    remainder, scales = subtract_from_particles(data, weight, reference, rotations, mask=None)
    assert scales == pytest.approx(1.0, abs=1e-4)
    assert np.abs(remainder).max() < 1e-4 * np.abs(data).max()
    with pytest.raises(ValueError, match="2 particles"):
        subtract_from_particles(data, weight, reference, rotations[:1])
