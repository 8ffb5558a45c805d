"""sim.score compares runs with the simulation truth; picks are scored up to a tomogram shift."""

import json

import numpy as np

from tomoweave.api import Project
from tomoweave.protocols.evaluate import tomogram_offset_a


def test_tomogram_offset_is_recovered_from_shifted_picks_with_false_positives():
    rng = np.random.default_rng(0)
    true_a = rng.uniform(-2000, 2000, size=(40, 3))
    shift = np.array([12.0, -30.0, 110.0])
    found = np.concatenate([true_a + shift + rng.normal(0, 5, size=true_a.shape),
                            rng.uniform(-2000, 2000, size=(15, 3))])
    assert np.allclose(tomogram_offset_a(true_a, found, 60.0), shift, atol=4.0)


def test_score_run_reports_alignment_and_picking_of_each_run(tmp_path):
    project = Project.init(tmp_path / "project")
    project.run("simulate", params={"preset": "tiny", "seed": 2}, executor="inline")
    project.run("align.fiducial", inputs={"tilt_series": "simulate.tilt_series"},
                name="fiducial", executor="inline")
    run = project.run("sim.score", inputs={"tilt_series": ["fiducial"],
                                           "particles": ["simulate.true_particles"]},
                      params={"template": None}, executor="inline")
    assert run.state == "finished"
    scores = json.loads((project.root / run.folder / "outputs" / "TS_01_scores.json").read_text())
    assert scores["picking"]["simulate"]["f1"] == 1.0
    assert np.allclose(scores["picking"]["simulate"]["tomogram_offset_a"], 0.0)
    assert np.isfinite(scores["alignment"]["fiducial"]["rms_px"])
    assert (project.root / run.folder / "outputs" / "TS_01_scores.png").is_file()
