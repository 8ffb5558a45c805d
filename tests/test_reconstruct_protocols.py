"""End to end: simulate -> attach the true alignment/CTF -> reconstruct.wbp / reconstruct.sirt ->
denoise.filter / denoise.n2n, scored against the simulator's ground-truth volume."""

from __future__ import annotations

import numpy as np
import pytest
import sim_helpers  # noqa: F401  (registers test.attach_truth)

from tomoweave.algorithms.reconstruction import lowpass_correlation
from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import load_truth

SIM = {"preset": "test", "seed": 5, "image_size_px": 96, "thickness_a": 500.0,
       "tilt_step_deg": 4.0, "exclude_templates": ["4v4r"]}




pytestmark = pytest.mark.xdist_group("reconstruct_e2e")

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = Project.init(tmp_path_factory.mktemp("reconstruct") / "proj")
    simulated = project.run("simulate", params=SIM, executor="inline")
    assert simulated.state == "finished"
    aligned = project.run("test.attach_truth", inputs={"tilt_series": simulated.name},
                          params={"even_odd": True}, executor="inline", name="aligned")
    assert aligned.state == "finished"
    return project


def truth_of(project: Project):
    run = project.get_run("aligned")
    series = project.items(run, "tilt_series")[0]
    folder = project.path(series.tilts[0].image_path).parent
    truth = load_truth(folder / "truth" / f"{series.name}.json")
    volume, _ = read_mrc(folder / truth.volume_file)
    return truth, volume


def score(project: Project, tomogram, truth, volume) -> float:
    """Correlation with the truth inside the slab; tomograms show density dark, so negate."""
    data, _ = read_mrc(project.path(tomogram.path))
    nz = volume.shape[0]
    mask = np.zeros(volume.shape, dtype=bool)
    half = int(truth.thickness_a / truth.pixel_size_a / 2)
    mask[nz // 2 - half: nz // 2 + half + 1] = True
    return lowpass_correlation(-data, volume, truth.pixel_size_a, 2.5 * truth.pixel_size_a, mask)


def test_unaligned_series_gives_a_clear_error(project):
    simulated = project.runs()[0]
    run = project.run("reconstruct.wbp", inputs={"tilt_series": simulated.name},
                      params={"binning": 1}, executor="inline")
    assert run.state in ("failed", "finished with failures")
    assert project.items(run, "tomograms") == []
    log = (project.root / run.record.folder / "logs" / "run.log").read_text()
    assert "not aligned" in log and "align.fiducial" in log


def test_wbp_even_odd_sirt_and_denoising_against_truth(project):
    truth, volume = truth_of(project)
    thickness_a = volume.shape[0] * truth.pixel_size_a
    wbp = project.run("reconstruct.wbp", inputs={"tilt_series": "aligned"},
                      params={"binning": 1, "thickness_a": thickness_a,
                              "ctf_correction": "phase_flip"}, executor="inline")
    assert wbp.state == "finished"
    tomogram = project.items(wbp, "tomograms")[0]
    assert tomogram.size_xyz == (96, 96, volume.shape[0])
    assert tomogram.even_path and tomogram.odd_path and tomogram.ctf_corrected
    assert (project.root / wbp.record.folder / "outputs" / f"{tomogram.name}_slices.png").exists()
    wbp_score = score(project, tomogram, truth, volume)
    print("scores: wbp", wbp_score)
    assert wbp_score > 0.45, wbp_score

    sirt = project.run("reconstruct.sirt", inputs={"tilt_series": "aligned"},
                       params={"binning": 2, "thickness_a": thickness_a, "iterations": 8,
                               "even_odd": False}, executor="inline")
    assert sirt.state == "finished"
    sirt_tomogram = project.items(sirt, "tomograms")[0]
    assert sirt_tomogram.size_xyz[:2] == (48, 48)
    assert sirt_tomogram.pixel_size_a == pytest.approx(2 * truth.pixel_size_a)
    assert sirt_tomogram.even_path is None

    n2n = project.run("denoise.n2n", inputs={"tomograms": wbp.name}, executor="inline")
    assert n2n.state == "finished"
    n2n_score = score(project, project.items(n2n, "tomograms")[0], truth, volume)
    print("n2n", n2n_score)
    assert n2n_score > wbp_score + 0.02, (n2n_score, wbp_score)

    filtered = project.run("denoise.filter", inputs={"tomograms": wbp.name},
                           params={"method": "diffusion"}, executor="inline")
    assert filtered.state == "finished"
    filtered_score = score(project, project.items(filtered, "tomograms")[0], truth, volume)
    print("diffusion", filtered_score)
    assert filtered_score > wbp_score + 0.02, (filtered_score, wbp_score)

    no_halves = project.run("denoise.n2n", inputs={"tomograms": sirt.name}, executor="inline")
    assert no_halves.state in ("failed", "finished with failures")
