"""Particle images for averaging, end to end on a simulated STA set (sim preset ``sta_test``):
simulate -> true alignment/CTF -> WBP -> particles.extract (per-particle 3D CTF weights) and
particles.extract_pseudo; each proven by an oracle reconstruction at the true poses against
the true density (FSC)."""

from __future__ import annotations

import numpy as np
import pytest
import sim_helpers  # noqa: F401  (registers test.attach_truth)

from tomoweave.algorithms.averaging.particle_images import load_particle_images
from tomoweave.algorithms.fourier import rfft_frequencies, rfft_from_centred_grid
from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim.oracle import oracle_map, resolution_to_truth_a, truth_map

pytestmark = [pytest.mark.xdist_group("sta_particle_images"), pytest.mark.slow]
BOX = 40


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = Project.init(tmp_path_factory.mktemp("sta") / "proj")
    simulated = project.run("simulate", params={"preset": "sta_test", "seed": 4},
                            executor="inline", name="sim")
    assert simulated.state == "finished"
    aligned = project.run("test.attach_truth", inputs={"tilt_series": "sim"},
                          executor="inline", name="aligned")
    assert aligned.state == "finished"
    wbp = project.run("reconstruct.wbp", inputs={"tilt_series": "aligned"},
                      params={"binning": 1.0, "thickness_a": 1000.0, "even_odd": False},
                      executor="inline", name="wbp")
    assert wbp.state == "finished"
    return project


@pytest.fixture(scope="module")
def runs(project):
    common = {"box_size_px": BOX, "normalise": False}
    plain = project.run("particles.extract", inputs={"particles": "sim.true_particles",
                                                     "tomograms": "wbp"},
                        params={**common, "invert": True}, executor="inline", name="plain")
    model = project.run("particles.extract", inputs={"particles": "sim.true_particles",
                                                     "tomograms": "wbp",
                                                     "tilt_series": "aligned"},
                        params={**common, "ctf_weight": True}, executor="inline", name="model")
    pseudo = project.run("particles.extract_pseudo", inputs={"particles": "sim.true_particles",
                                                             "tilt_series": "aligned"},
                         params={"box_size_px": BOX}, executor="inline", name="pseudo")
    assert [r.state for r in (plain, model, pseudo)] == ["finished"] * 3
    return {"plain": plain, "ctf_model": model, "pseudo": pseudo}


def _oracle_resolution(project, run) -> tuple[float, float]:
    subtomograms = project.items(run, "subtomograms")
    images = load_particle_images(subtomograms, project.path)
    rotations = np.array([s.particle.rotation_matrix for s in subtomograms])
    return resolution_to_truth_a(oracle_map(images, rotations),
                                 truth_map("4v4r", BOX, images.pixel_size_a), images.pixel_size_a)


def test_particle_images_against_the_truth(project, runs):
    assert len(project.items("sim", "true_particles")) >= 25
    results = {name: _oracle_resolution(project, run) for name, run in runs.items()}
    print("oracle FSC-to-truth at 0.5 / 0.143 (Å):", results)
    # 10 Å/px, 3 µm defocus: the first CTF zero (24 Å) bounds every kind of image; the
    # pseudo-subtomograms reach it and are no worse than subtomograms of the WBP tomogram
    assert results["pseudo"][0] <= 34.0
    assert results["pseudo"][0] <= 1.02 * min(results["plain"][0], results["ctf_model"][0])
    pseudo = project.items(runs["pseudo"], "subtomograms")[0]
    assert pseudo.ctf_premultiplied and pseudo.multiplicity_path


def test_per_particle_weights_follow_the_tilts(project, runs):
    subtomograms = project.items(runs["ctf_model"], "subtomograms")
    assert len({s.weight_path for s in subtomograms}) == len(subtomograms)
    heights = np.array([s.particle.position_a[2] for s in subtomograms])
    low, high = subtomograms[int(np.argmin(heights))], subtomograms[int(np.argmax(heights))]
    weight_low = rfft_from_centred_grid(read_mrc(project.path(low.weight_path))[0])
    weight_high = rfft_from_centred_grid(read_mrc(project.path(high.weight_path))[0])
    kz, ky, kx = rfft_frequencies((BOX,) * 3)
    angle = np.broadcast_to(np.degrees(np.arctan2(np.abs(kz), kx)), weight_low.shape)
    radius = np.broadcast_to(np.sqrt(kz**2 + ky**2 + kx**2), weight_low.shape)
    # the missing wedge of the actual tilts (±60° and a tilt offset of at most 1°): voxels
    # more than the trilinear reach (√3 voxels) beyond the plane of the highest tilt are empty
    edge = np.radians(61.0)
    beyond_voxels = (np.abs(kz) * np.cos(edge) - kx * np.sin(edge)) * BOX
    wedge = np.broadcast_to(beyond_voxels > np.sqrt(3), weight_low.shape)
    assert wedge.sum() > 0.08 * wedge.size
    assert np.abs(weight_low[wedge]).max() == 0
    assert np.abs(weight_low[~wedge & (radius < 0.45)]).max() > 0.5
    # particles at other heights see other defoci: their CTF models differ at high frequency
    sampled = (angle < 30) & (radius > 0.3) & (radius < 0.45)
    assert np.abs(weight_low[sampled] - weight_high[sampled]).max() > 0.05


def test_pseudo_subtomograms_need_an_aligned_series(project):
    with pytest.raises(InputError, match=r"TS_01: tilt series has no alignment"):
        project.run("particles.extract_pseudo", inputs={"particles": "sim.true_particles",
                                                        "tilt_series": "sim"},
                    params={"box_size_px": BOX}, executor="inline")
