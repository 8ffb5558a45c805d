"""Issue 12's pseudo-subtomogram acceptance on the small strong-CTF set (sim preset
``sta_ctf_test``: 4 Å/px, defocus 3–5 µm, ±60°, 3 e/Å² per tilt, proteasomes), binned 2×:
pseudo-subtomograms give a better oracle resolution than plain subtomograms of a WBP tomogram
and no worse than 3D-CTF-corrected subtomograms. The full set (``sta_ctf``, ~600 particles)
is measured by ``python -m benchmarks particle_images``."""

from __future__ import annotations

import pytest

from tomoweave.sim import simulate_dataset
from tomoweave.sim.oracle import compare_particle_images

pytestmark = pytest.mark.slow


def test_pseudo_subtomograms_beat_plain_and_match_3d_ctf(tmp_path):
    dataset = simulate_dataset(tmp_path / "sim", "sta_ctf_test", seed=7)
    results = compare_particle_images(tmp_path / "sim", dataset.truths(), box_px=40, binning=2)
    resolution = {kind: r["resolution_a"] for kind, r in results.items()}
    print("oracle FSC-to-truth 0.5 / 0.143 (Å):", resolution)
    assert results["pseudo"]["particles"] >= 15
    pseudo, plain, corrected = resolution["pseudo"], resolution["plain"], resolution["ctf3d"]
    # better than plain WBP boxes (whose weight knows no CTF) beyond the first CTF zero (~30 Å)
    assert pseudo[1] < plain[1] and pseudo[1] < 30.0
    # no worse than the 3D-CTF-corrected tomogram's boxes: within one shell of 40 at 8 Å/px
    # (≈ 4 % at these frequencies) at both thresholds
    for mine, theirs in zip(pseudo, corrected, strict=True):
        assert mine <= 1.04 * theirs
