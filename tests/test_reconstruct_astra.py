"""Accuracy against ASTRA's CPU FBP and SIRT on the same aligned, noise-free simulated data, and
against the truth when the series carries a real misalignment (rotation, shifts, tilt offset)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_reconstruction import compare_with_astra, slab_mask
from tomoweave.algorithms import reconstruction
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import simulate_dataset

SPECIMEN = {"image_size_px": 96, "thickness_a": 500.0, "noise_on": False, "ctf_on": False,
            "particles": {"1bxn": 6, "6pxm": 6, "3j9i": 3}}


pytestmark = pytest.mark.xdist_group("reconstruct_astra")

@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    data = simulate_dataset(tmp_path_factory.mktemp("astra"), preset="test", seed=4,
                            misalignment=0.0, tilt_axis_deg=0.0, **SPECIMEN)
    series = data.series[0]
    projections, _ = read_mrc(series.projections_path)
    volume, _ = read_mrc(series.volume_path)
    return series.truth(), projections, volume


def test_wbp_and_sirt_correlate_with_truth_at_least_as_well_as_astra(aligned):
    truth, projections, volume = aligned
    assert np.allclose(truth.projection_matrices()[:, :2, 3], 0)  # aligned: no shifts to undo
    scores = compare_with_astra(projections, truth, volume, sirt_iterations=10)
    for name in ("WBP", "SIRT"):
        ours, astra = scores[name]
        print(f"{name}: tomoweave {ours:.4f} ASTRA {astra:.4f}")
        assert ours > 0.7, (name, ours)
        assert ours - astra >= -0.01, (name, ours, astra)


def test_misaligned_series_reconstructs_as_well_as_aligned_one(aligned, tmp_path):
    truth, projections, volume = aligned
    data = simulate_dataset(tmp_path, preset="test", seed=4, misalignment=1.0,
                            tilt_axis_deg=85.0, x_tilt_deg=1.5, **SPECIMEN)
    series = data.series[0]
    moved, _ = read_mrc(series.projections_path)
    moved_truth = series.truth()
    assert np.abs(moved_truth.projection_matrices()[:, :2, 3]).max() > 20  # shifted by Å
    pixel_a = truth.pixel_size_a
    mask = slab_mask(volume.shape, truth.thickness_a / pixel_a)

    def wbp_score(stack, series_truth):
        geometry = reconstruction.make_geometry(series_truth.projection_matrices(),
                                                stack.shape[1:], pixel_a,
                                                volume.shape[0] * pixel_a)
        result = reconstruction.reconstruct_wbp(lambda i: stack[i], geometry)
        return reconstruction.lowpass_correlation(result, volume, pixel_a, 2.5 * pixel_a, mask)

    reference, misaligned = wbp_score(projections, truth), wbp_score(moved, moved_truth)
    print(f"aligned {reference:.4f}, misaligned with true alignment {misaligned:.4f}")
    assert misaligned > reference - 0.03, (misaligned, reference)
