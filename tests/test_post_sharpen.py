"""Sharpening and local resolution on arrays whose truth is known.

Maps are random point "atoms" (a white spectrum in expectation: Wilson statistics), blurred by a
known B-factor, with independent white noise in each half. Thresholds are the issue's acceptance:
the mask-corrected half-map FSC at 0.143 within one Fourier shell of the map-vs-truth FSC at 0.5
(the two agree for a map made from two halves: Rosenthal & Henderson 2003), B within 15 %.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.postprocess import local_resolution as locres
from tomoweave.algorithms.postprocess import sharpen
from tomoweave.algorithms.volumes import spherical_mask

BOX, PIXEL_A = 64, 2.0


def atom_map(box: int, count: int, radius_fraction: float, seed: int) -> np.ndarray:
    """``count`` unit points at random voxels inside a sphere (white spectrum inside it)."""
    rng = np.random.default_rng(seed)
    grid = np.indices((box,) * 3).reshape(3, -1).T - box // 2
    inside = grid[(grid**2).sum(1) < (radius_fraction * box) ** 2]
    volume = np.zeros((box,) * 3, np.float32)
    chosen = inside[rng.choice(len(inside), count, replace=False)] + box // 2
    volume[tuple(chosen.T)] = 1.0
    return volume


def blurred(volume: np.ndarray, bfactor_a2: float) -> np.ndarray:
    spectrum = scipy.fft.rfftn(volume) * sharpen.bfactor_filter(volume.shape[0], PIXEL_A,
                                                                bfactor_a2)
    return scipy.fft.irfftn(spectrum, s=volume.shape).astype(np.float32)


def half_maps(truth: np.ndarray, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple((truth + rng.normal(scale=noise, size=truth.shape)).astype(np.float32)
                 for _ in range(2))


@pytest.mark.parametrize(("bfactor_a2", "noise", "seed"), [(150.0, 0.1, 1), (100.0, 0.16, 2),
                                                           (250.0, 0.06, 3)])
def test_sharpening_recovers_resolution_and_bfactor(bfactor_a2, noise, seed):
    truth = blurred(atom_map(BOX, 3000, 0.3, seed), bfactor_a2)
    half1, half2 = half_maps(truth, noise, seed + 10)
    mask = spherical_mask(BOX, 0.3 * BOX + 3, 4)
    result = sharpen.sharpen_half_maps(half1, half2, PIXEL_A, mask=mask)
    # the mean map against the truth (both masked) at 0.5: the resolution the halves promise
    to_truth = fourier.fourier_shell_correlation(0.5 * (half1 + half2), truth, mask)
    truth_a = fourier.resolution_at_threshold(to_truth, BOX, PIXEL_A, 0.5)
    length_a = BOX * PIXEL_A
    assert 2.2 * PIXEL_A < truth_a < 8 * PIXEL_A, "the case must resolve inside the box"
    assert abs(length_a / result.resolution_a - length_a / truth_a) <= 1.0
    assert result.bfactor_a2 == pytest.approx(bfactor_a2, rel=0.15)
    assert result.guinier.correlation < -0.9
    # the sharpened map's Guinier plot is flat over the fitted range, short of the low-pass
    # edge (2 shells wide, centred on the resolution)
    s2, flat = result.guinier_s2_inv_a2, result.guinier_ln_sharpened
    low, high = result.guinier.range_a
    inside = (s2 >= 1 / low**2) & (s2 <= (1 / high - 2 / length_a) ** 2)
    slope = np.polyfit(s2[inside], flat[inside], 1)[0]
    assert abs(4 * slope) < 0.15 * bfactor_a2


def test_given_bfactor_and_range_are_used():
    truth = blurred(atom_map(BOX, 3000, 0.3, 4), 120.0)
    half1, half2 = half_maps(truth, 0.2, 5)
    fixed = sharpen.sharpen_half_maps(half1, half2, PIXEL_A, bfactor_a2=50.0)
    assert fixed.bfactor_a2 == 50.0 and fixed.sharpened_masked is None
    plain = scipy.fft.rfftn(0.5 * (half1 + half2))
    ratio = fourier.shell_average(np.abs(scipy.fft.rfftn(fixed.sharpened)), BOX)[3] / \
        fourier.shell_average(np.abs(plain), BOX)[3]
    weight = fourier.fsc_weighting(fixed.fsc.corrected)[3]
    expected = weight * np.exp(50.0 / 4 * (3 / (BOX * PIXEL_A)) ** 2)
    assert ratio == pytest.approx(expected, rel=0.02)  # shell 3 is far inside the low-pass
    with pytest.raises(ValueError, match="Guinier range"):
        sharpen.sharpen_half_maps(half1, half2, PIXEL_A, guinier_range_a=(5.0, 9.0))


def test_automatic_guinier_range():
    assert sharpen.automatic_guinier_range(4.0, 64, 2.0) == pytest.approx((128 / 12, 4.0))
    low, high = sharpen.automatic_guinier_range(7.5, 32, 2.0)  # widened to three shells
    assert high == pytest.approx(64 / 8) and low == pytest.approx(64 / 6)
    # a tomography average at 20 Å: no automatic B, FSC weighting and low-pass only
    assert sharpen.automatic_guinier_range(20.0, 32, 5.0) is None
    truth = blurred(atom_map(32, 800, 0.3, 6), 100.0)
    half1, half2 = half_maps(truth, 1.0, 7)  # noisy: resolution far worse than 8 Å
    coarse = sharpen.sharpen_half_maps(half1, half2, 2 * PIXEL_A)
    assert coarse.resolution_a > sharpen.WILSON_LIMIT_A and coarse.bfactor_a2 == 0.0


def band_limited(shape, cutoff_a: float, rng) -> np.ndarray:
    white = rng.normal(size=shape).astype(np.float32)
    spectrum = scipy.fft.rfftn(white) * fourier.lowpass_filter(shape, 5.0, cutoff_a)
    return scipy.fft.irfftn(spectrum, s=shape).astype(np.float32)


def test_local_resolution_of_two_regions():
    """Left half filtered to 15 Å, right half to 30 Å, white noise of the in-band signal's power
    (SNR 1 per shell, half-map FSC 0.5 inside the band): medians within 15 %."""
    rng = np.random.default_rng(7)
    shape, window = (40, 40, 96), 20
    left, right = band_limited(shape, 15.0, rng), band_limited(shape, 30.0, rng)
    truth = np.where(np.arange(shape[2]) < shape[2] // 2, left, right).astype(np.float32)
    halves = [truth + rng.normal(size=shape).astype(np.float32) for _ in range(2)]
    result = locres.local_resolution(*halves, 5.0, window_px=window, step_px=4)
    margin = window // 2
    left_a = np.median(result.map_a[:, :, 4:shape[2] // 2 - margin])
    right_a = np.median(result.map_a[:, :, shape[2] // 2 + margin:-4])
    assert left_a == pytest.approx(15.0, rel=0.15)
    assert right_a == pytest.approx(30.0, rel=0.15)
    filtered = locres.locally_filtered(0.5 * (halves[0] + halves[1]), result.map_a, 5.0)
    # the locally filtered map is closer to the truth than the noisy mean, on both sides
    for part in (slice(0, shape[2] // 2 - margin), slice(shape[2] // 2 + margin, None)):
        noisy = np.mean((0.5 * (halves[0] + halves[1]) - truth)[:, :, part] ** 2)
        assert np.mean((filtered - truth)[:, :, part] ** 2) < 0.8 * noisy


def test_even_odd_tomogram_region_with_added_noise_comes_out_worse():
    rng = np.random.default_rng(8)
    shape = (32, 64, 64)
    truth = band_limited(shape, 12.0, rng)
    even, odd = (truth + 0.5 * rng.normal(size=shape).astype(np.float32) for _ in range(2))
    extra = np.zeros(shape, np.float32)
    extra[:, :, 40:] = 1.0  # a noisier region: x ≥ 40
    even = even + 2.0 * extra * rng.normal(size=shape).astype(np.float32)
    odd = odd + 2.0 * extra * rng.normal(size=shape).astype(np.float32)
    mask = np.ones(shape, np.float32)
    mask[:, :4] = 0
    result = locres.local_resolution(even, odd, 5.0, window_px=16, step_px=4, mask=mask)
    clean = np.median(result.map_a[:, 8:, 4:24])
    noisy = np.median(result.map_a[:, 8:, 52:])
    assert noisy > 1.3 * clean
    assert np.all(result.map_a[:, :4] == 0)
    samples = locres.values_at_positions(result.map_a, np.array([[16, 32, 10], [16, 32, 60]]))
    assert samples[1] > samples[0]


def test_mask_corrected_fsc_has_no_dip_at_the_randomisation_shell():
    """The shell where phase randomisation starts is only half randomised (its FSC_n stays
    near the masked FSC); correcting it made a dip (0.95 → 0.66 here, between 0.99 and 0.94)
    that the sharpening weights and a low-resolution crossing would inherit."""
    from tomoweave.algorithms.averaging.fsc import gold_standard_fsc

    truth = blurred(atom_map(BOX, 3000, 0.3, 2), 150.0)
    half1, half2 = half_maps(truth, 0.1, 12)
    result = gold_standard_fsc(half1, half2, PIXEL_A, spherical_mask(BOX, 0.3 * BOX + 3, 4))
    shell = result.randomised_from_shell
    assert result.randomised[shell] > 0.5 > result.randomised[shell + 1]  # half vs fully
    curve = result.corrected
    assert curve[shell] >= min(curve[shell - 1], curve[shell + 1]) - 0.02
