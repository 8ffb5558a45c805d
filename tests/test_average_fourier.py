"""Fourier shells, FSC, phase randomisation, mask correction and soft masks (shared numerics).

Thresholds follow from statistics: the FSC of independent noise in a shell of n voxels has a
standard deviation of about 1/sqrt(n / 2) (the half grid holds each pair once), so 5 of them
bound it; float32 FFTs of 32³ boxes agree with float64 sums to ~1e-5 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging.fsc import automatic_mask, gold_standard_fsc
from tomoweave.algorithms.volumes import soft_mask_from_map, spherical_mask

BOX = 32


def smooth_blob(box: int = BOX, seed: int = 0, sigma: float = 1.2) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    volume = np.zeros((box,) * 3, dtype=np.float32)
    for _ in range(20):
        volume[tuple(rng.integers(box // 4, 3 * box // 4, 3))] = rng.uniform(1, 2)
    return ndimage.gaussian_filter(volume, sigma).astype(np.float32)


def test_shell_sums_match_the_full_spectrum():
    volume = np.random.default_rng(0).normal(size=(BOX,) * 3).astype(np.float32)
    power = np.abs(scipy.fft.rfftn(volume)) ** 2
    full = np.abs(scipy.fft.fftn(volume)) ** 2
    freq = np.fft.fftfreq(BOX) * BOX
    radius = np.rint(np.sqrt(freq[:, None, None] ** 2 + freq[None, :, None] ** 2
                             + freq[None, None, :] ** 2)).astype(int)
    expected = np.bincount(radius.ravel(), weights=full.ravel())[: BOX // 2 + 1]
    assert np.allclose(fourier.shell_sums(power, BOX), expected, rtol=1e-4)
    assert fourier.shell_sums(np.stack([power, 2 * power]), BOX).shape == (2, BOX // 2 + 1)
    assert np.allclose(fourier.shell_frequencies_inv_a(BOX, 5.0)[-1], 0.1)


def test_fsc_of_identical_and_independent_maps():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(BOX,) * 3).astype(np.float32)
    b = rng.normal(size=(BOX,) * 3).astype(np.float32)
    assert np.allclose(fourier.fourier_shell_correlation(a, a)[1:], 1.0, atol=1e-5)
    noise_fsc = fourier.fourier_shell_correlation(a, b)
    counts = fourier.shell_sums(np.ones((BOX, BOX, BOX // 2 + 1)), BOX)
    assert np.all(np.abs(noise_fsc[2:]) < 5 / np.sqrt(counts[2:] / 2))


def test_fsc_follows_the_signal_to_noise_ratio():
    """Signal + independent noise of known SNR per shell: FSC = SNR / (1 + SNR)."""
    rng = np.random.default_rng(2)
    signal = rng.normal(size=(BOX,) * 3).astype(np.float32)
    snr = 1.0
    halves = [signal + rng.normal(scale=np.sqrt(1 / snr), size=signal.shape) for _ in (1, 2)]
    fsc = fourier.fourier_shell_correlation(*halves)
    counts = fourier.shell_sums(np.ones((BOX, BOX, BOX // 2 + 1)), BOX)
    good = counts > 200
    assert np.all(np.abs(fsc[good] - 0.5) < 5 / np.sqrt(counts[good] / 2))


def test_resolution_at_threshold_interpolates_between_shells():
    fsc = np.array([1.0, 0.9, 0.5, 0.1, 0.0])
    # crossing 0.143 between shells 2 (0.5) and 3 (0.1): shell 2 + 0.357/0.4
    expected = 1.0 / ((2 + (0.5 - 0.143) / 0.4) / (8 * 4.0))
    assert fourier.resolution_at_threshold(fsc, 8, 4.0) == pytest.approx(expected)
    assert fourier.resolution_at_threshold(np.ones(5), 8, 4.0) == 8.0  # Nyquist


def test_phase_randomisation_keeps_amplitudes_and_low_frequencies():
    volume = smooth_blob(sigma=0.8)
    randomised = fourier.phase_randomise(volume, 5.0, 20.0, rng=3)
    spectrum_a = scipy.fft.rfftn(volume)
    spectrum_b = scipy.fft.rfftn(randomised)
    assert np.allclose(np.abs(spectrum_a), np.abs(spectrum_b), rtol=1e-3,
                       atol=1e-4 * np.abs(spectrum_a).max())
    fsc = fourier.fourier_shell_correlation(volume, randomised)
    cut_shell = BOX * 5.0 / 20.0  # 8
    assert np.all(fsc[1:int(cut_shell)] > 0.999)
    assert np.all(np.abs(fsc[int(cut_shell) + 2:]) < 0.2)


def test_mask_correction_removes_the_masks_own_correlation():
    """Halves identical below 20 Å and independent beyond: a tight mask spreads the shared low
    frequencies outwards, so the masked FSC stays high past 20 Å; corrected, it is zero there.

    The mask keeps ~4 % of the box, so one shell's FSC fluctuates by ~1/sqrt(0.04 n / 2)
    ≈ 0.2; the bound is on the mean over 6 shells and 3 seed pairs (σ ≈ 0.05).
    """
    blob = smooth_blob(sigma=0.7)
    mask = spherical_mask(BOX, 7, 1)
    beyond = np.arange(BOX // 2 + 1) >= 11  # 20 Å is shell 8; the mask's spread reaches ~10
    masked, corrected = [], []
    for seeds in ((10, 11), (12, 13), (14, 15)):
        halves = [fourier.phase_randomise(blob, 5.0, 20.0, rng=seed) for seed in seeds]
        result = gold_standard_fsc(halves[0], halves[1], 5.0, mask)
        assert result.randomised_from_shell in (8, 9)
        assert np.all(result.unmasked[beyond] < 0.2)
        assert 16.0 < result.resolution_a < 23.0
        assert result.resolution_a == pytest.approx(
            fourier.resolution_at_threshold(result.corrected, BOX, 5.0))
        masked.append(result.masked[beyond].mean())
        corrected.append(result.corrected[beyond].mean())
    assert np.mean(masked) > 0.2  # correlation the mask made
    assert abs(np.mean(corrected)) < 0.1
    records = result.curve_records()
    assert records[4]["resolution_a"] == pytest.approx(BOX * 5.0 / 4)
    assert {"fsc", "fsc_unmasked", "fsc_masked", "fsc_phase_randomised"} <= set(records[4])


def test_soft_mask_from_map():
    volume = np.zeros((BOX,) * 3, dtype=np.float32)
    volume[12:20, 12:20, 12:20] = 1.0
    volume[2, 2, 2] = 5.0  # a speck that the largest-region rule drops
    mask = soft_mask_from_map(volume, 0.5, dilation_px=2, soft_px=3, min_region_fraction=0.1)
    assert mask[16, 16, 16] == 1.0 and mask[16, 16, 21] == 1.0  # inside and within dilation
    assert 0 < mask[16, 16, 23] < 1  # the cosine edge
    assert mask[16, 16, 26] == 0.0 and mask[2, 2, 2] == 0.0
    with pytest.raises(ValueError, match="no voxel above"):
        soft_mask_from_map(volume, 10.0)


def test_automatic_mask_encloses_the_particle():
    particle = smooth_blob(sigma=1.5) * spherical_mask(BOX, 9, 1)  # 90 Å across at 5 Å/px
    noisy = particle + np.random.default_rng(5).normal(scale=0.002, size=particle.shape)
    mask = automatic_mask(noisy.astype(np.float32), 5.0, diameter_a=120.0)
    inside = particle > 0.2 * particle.max()
    assert mask[inside].min() > 0.99
    assert mask[0, 0, 0] == 0.0 and mask[BOX // 2, BOX // 2, 0] == 0.0
    assert mask.mean() < 0.6


def test_crop_rfft_is_fourier_binning():
    volume = smooth_blob()
    cropped = fourier.crop_rfft(scipy.fft.rfftn(volume), 20)
    expected = scipy.fft.rfftn(fourier.fourier_crop(volume, 20)) * (BOX / 20) ** 3
    # the Nyquist planes (±10) differ: a real crop folds +10 and -10 together
    inner = (np.r_[0:10, 11:20], np.r_[0:10, 11:20], slice(0, 10))
    assert np.allclose(cropped[np.ix_(*inner[:2], np.arange(10))],
                       expected[np.ix_(*inner[:2], np.arange(10))],
                       atol=1e-4 * np.abs(expected).max())
    # padding back to 32 loses only what lay beyond the 20-box Nyquist: a smooth map keeps
    # ~1e-4 of its spectrum there (the Gaussian kernel is truncated), < 1 % of its peak
    smooth = smooth_blob(sigma=3.0)
    small = fourier.fourier_crop(smooth, 20)
    padded = fourier.fourier_pad(small, BOX)
    assert np.allclose(padded, smooth, atol=1e-2 * smooth.max())
    assert np.allclose(fourier.fourier_crop(padded, 20), small, atol=1e-3 * smooth.max())


def test_fsc_weighting_and_shell_filter():
    assert fourier.fsc_weighting(np.array([1.0, 0.5, 0.0, -0.2])) == pytest.approx(
        [1.0, np.sqrt(2 / 3), 0.0, 0.0])
    radial = fourier.shell_filter(np.linspace(1, 0, BOX // 2 + 1), BOX)
    assert radial[0, 0, 0] == 1.0 and radial[0, 0, BOX // 2] == pytest.approx(0.0)
    assert radial[0, 0, 4] == pytest.approx(1 - 4 / (BOX // 2), abs=1e-6)
