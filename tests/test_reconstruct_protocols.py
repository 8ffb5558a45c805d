"""End to end: simulate -> attach the true alignment/CTF -> reconstruct.wbp / reconstruct.sirt ->
denoise.filter / denoise.n2n, scored against the simulator's ground-truth volume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from tomoweave.algorithms.reconstruction import lowpass_correlation
from tomoweave.api import Project
from tomoweave.engine import Input, Output, ProcessContext, Protocol, param
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.model import TiltSeries
from tomoweave.sim import load_truth

SIM = {"preset": "test", "seed": 5, "image_size_px": 96, "thickness_a": 500.0,
       "tilt_step_deg": 4.0, "exclude_templates": ["4v4r"]}


class AttachParams(BaseModel):
    even_odd: bool = param(False, help="write even/odd halves (Poisson, half dose each)")


class AttachTruth(Protocol):
    """Test helper: the simulator's true alignment and CTF on every tilt (+ even/odd halves)."""

    name = "test.attach_truth"
    Params = AttachParams
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tilt_series": Output(TiltSeries)}

    def process(self, item: TiltSeries, params: AttachParams,
                context: ProcessContext) -> dict[str, Any]:
        folder = context.resolve(item.tilts[0].image_path).parent
        truth = load_truth(folder / "truth" / f"{item.name}.json")
        series = item.model_copy(deep=True)
        for tilt, true_tilt in zip(series.tilts, truth.tilts, strict=True):
            tilt.alignment = true_tilt.alignment()
            tilt.ctf = true_tilt.ctf()
        if params.even_odd:
            noise_free, _ = read_mrc(folder / truth.noise_free_file)
            rng = np.random.default_rng(1)
            for kind in ("even", "odd"):
                half = rng.poisson(noise_free / 2).astype(np.float32)
                path = write_mrc(context.output_path(f"{item.name}_{kind}.mrc"), half,
                                 truth.pixel_size_a, stack=True)
                for tilt in series.tilts:
                    setattr(tilt, f"{kind}_path", context.relative(path))
                    setattr(tilt, f"{kind}_index", tilt.image_index)
        return {"tilt_series": series}


register_protocol(AttachTruth)


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
