"""Denoisers on a noisy phantom with known truth: every one must raise the correlation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from tomoweave.algorithms import denoise


def correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


pytestmark = pytest.mark.xdist_group("denoise_phantom")

@pytest.fixture(scope="module")
def phantom():
    """Blobs and a shell (edges) in a 64×96×96 volume; two halves with independent noise."""
    rng = np.random.default_rng(0)
    truth = np.zeros((64, 96, 96), dtype=np.float32)
    zz, yy, xx = np.mgrid[0:64, 0:96, 0:96]
    for _ in range(40):
        centre = rng.uniform([8, 8, 8], [56, 88, 88])
        radius = rng.uniform(2, 6)
        truth[((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
              < radius**2] += 1.0
    shell = np.sqrt((zz - 32) ** 2 + (yy - 48) ** 2 + (xx - 48) ** 2)
    truth[(shell > 20) & (shell < 22.5)] += 1.0
    truth = ndimage.gaussian_filter(truth, 0.7)
    sd = 1.2 * truth.std()
    even = truth + rng.normal(0, sd, truth.shape).astype(np.float32)
    odd = truth + rng.normal(0, sd, truth.shape).astype(np.float32)
    return truth, even.astype(np.float32), odd.astype(np.float32)


def test_edge_preserving_filters_improve_correlation(phantom):
    truth, even, odd = phantom
    full = 0.5 * (even + odd)
    before = correlation(full, truth)
    diffused = denoise.anisotropic_diffusion(full, iterations=10, kappa=2.0)
    bilateral = denoise.bilateral_filter(full, sigma_space_px=1.5, sigma_range=3.0)
    print(f"noisy {before:.3f} diffusion {correlation(diffused, truth):.3f} "
          f"bilateral {correlation(bilateral, truth):.3f}")
    assert correlation(diffused, truth) > before + 0.05
    assert correlation(bilateral, truth) > before + 0.05


def test_noise2noise_improves_correlation_and_trains_fast(phantom):
    truth, even, odd = phantom
    full = 0.5 * (even + odd)
    start = time.perf_counter()
    model = denoise.FilterBankN2N().fit(even, odd)
    trained_s = time.perf_counter() - start
    result = model.denoise_pair(even, odd)
    before, after = correlation(full, truth), correlation(result, truth)
    print(f"noisy {before:.3f} N2N {after:.3f}, trained in {trained_s:.1f} s")
    assert after > before + 0.1
    assert trained_s < 30
    assert '"weights"' in model.to_json()


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="not trained"):
        denoise.FilterBankN2N().predict(np.zeros((8, 8, 8), np.float32))
    with pytest.raises(ValueError, match="shapes differ"):
        denoise.FilterBankN2N().fit(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="step"):
        denoise.anisotropic_diffusion(np.zeros((4, 4, 4)), step=0.5)
    with pytest.raises(ValueError, match="volume"):
        denoise.bilateral_filter(np.zeros((4, 4)))
