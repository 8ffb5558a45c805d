"""The simulator's ground truth through every alignment format: beads projected with the exported
and re-imported alignment land where the simulator put them (within 0.1 px); particles and CTF
come back unchanged."""

import numpy as np
import pytest

from tomoweave.convert import ConvertOptions, Loaded, load, save
from tomoweave.geometry import project_points_a, projection_matrices, rotation_angle_between_deg
from tomoweave.sim import simulate_dataset

TOLERANCE_PX = 0.1
SOURCES = {"relion5": "optimisation_set.star", "imod": "TS_01.xf", "warp": "TS_01.xml",
           "aretomo": "TS_01.aln"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    dataset = simulate_dataset(folder, "tiny", seed=1)
    return dataset.series[0]


def _beads_px(series, truth) -> np.ndarray:
    matrices = projection_matrices([t.alignment for t in series.tilts])
    beads = np.array(truth.beads_a).reshape(-1, 3)
    centre = np.asarray(truth.image_size_xy) // 2
    return np.stack([project_points_a(m, beads) / truth.pixel_size_a + centre for m in matrices])


def test_mdoc_matches_truth_and_alignment_survives_every_format(simulated, tmp_path):
    truth = simulated.truth()
    (series,) = load(simulated.mdoc_path).series
    assert series.pixel_size_a == pytest.approx(truth.pixel_size_a)
    assert [t.tilt_deg for t in series.tilts] == pytest.approx(
        [t.nominal_tilt_deg for t in truth.tilts], abs=1e-3)
    assert [t.acquisition_order for t in series.tilts] == [t.acquisition_order
                                                          for t in truth.tilts]
    for tilt, true_tilt in zip(series.tilts, truth.tilts, strict=True):
        tilt.alignment, tilt.ctf = true_tilt.alignment(), true_tilt.ctf()
    series.image_size_xy = truth.image_size_xy
    expected = np.stack([truth.beads_px(i) for i in range(len(truth.tilts))])
    assert np.abs(_beads_px(series, truth) - expected).max() < 1e-9
    options = ConvertOptions(pixel_size_a=truth.pixel_size_a,
                             tomo_size_xyz=truth.tomogram_size_xyz,
                             image_size_xy=truth.image_size_xy)
    particles = truth.particles()
    for target, source in SOURCES.items():
        save(Loaded(series=[series], particles=particles if target == "relion5" else []),
             target, tmp_path / target, options)
        loaded = load(tmp_path / target / source, options)
        error = np.abs(_beads_px(loaded.series[0], truth) - expected).max()
        assert error < TOLERANCE_PX, f"{target}: beads off by {error:.3f} px"
        for tilt, true_tilt in zip(loaded.series[0].tilts, truth.tilts, strict=True):
            assert tilt.ctf.defocus_u_a == pytest.approx(true_tilt.defocus_u_a, rel=1e-5)
            assert tilt.ctf.defocus_v_a == pytest.approx(true_tilt.defocus_v_a, rel=1e-5)
    back = load(tmp_path / "relion5" / "optimisation_set.star", options).particles
    for original, again in zip(particles, back, strict=True):
        assert np.allclose(original.position_a, again.position_a, atol=1e-3)
        assert rotation_angle_between_deg(original.rotation_matrix, again.rotation_matrix) < 1e-3
