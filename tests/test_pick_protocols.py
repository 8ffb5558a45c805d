"""End to end through a project: import a tomogram and a template, pick, prune, extract.

The tomogram is a phantom (4v4r ribosomes at known positions behind a missing wedge and noise,
20 Å/voxel, dark protein); the accuracy of template matching itself is tested on the simulator
in test_pick_template_matching.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_pick_support import TEMPLATES, degrade, load_template, place_particles

from tomoweave.api import Project
from tomoweave.engine import InputError
from tomoweave.formats.mrc import read_mrc, write_mrc

PIXEL_A = 20.0


@pytest.fixture(scope="module")
def picked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pick")
    rng = np.random.default_rng(11)
    template = load_template("4v4r", PIXEL_A, 18)
    signal, positions_zyx, _ = place_particles((40, 96, 96), template, 8, 17, rng)
    tomogram = degrade(signal, rng, snr=1.0, contrast=-1.0)
    path = write_mrc(folder / "TS_01.mrc", tomogram, PIXEL_A)
    project = Project.init(folder / "project")
    tomograms = project.run("import.tomogram", params={"files": [str(path)]}, executor="inline")
    volume = project.run("import.volume", params={"files": [str(TEMPLATES / "4v4r.mrc")]},
                         executor="inline")
    params = {"angular_step_deg": 45.0, "particle_diameter_a": 300.0, "use_ctf": False}
    pick = project.run("pick.template", inputs={"tomograms": tomograms.name,
                                                "template": volume.name},
                       params=params, executor="inline")
    truth_a = (positions_zyx[:, ::-1] - np.array([96, 96, 40]) // 2) * PIXEL_A
    return project, tomograms, volume, pick, truth_a


def _matched(positions_a, truth_a, tolerance_a=60.0):
    distance = np.linalg.norm(np.asarray(positions_a)[:, None] - truth_a[None], axis=2)
    return np.sum(distance.min(axis=0) <= tolerance_a)


def test_pick_template_outputs_oriented_particles(picked):
    project, _, _, pick, truth_a = picked
    assert pick.state == "finished"
    particles = project.items(pick, "particles")
    assert _matched([p.position_a for p in particles], truth_a) >= 7
    assert len({p.name for p in particles}) == len(particles)
    first = particles[0].to_record()
    assert set(first) >= {"position_a", "rotation", "score", "tomogram"}
    assert first["tomogram"] == "TS_01" and first["score"] > 0
    outputs = project.root / "runs"
    assert list(outputs.glob("*pick.template*/outputs/TS_01_particles.png"))
    assert list(outputs.glob("*pick.template*/outputs/TS_01_score_histogram.png"))
    log = "\n".join(p.read_text() for p in outputs.glob("*pick.template*/logs/*.log"))
    assert "rescaled to the tomogram's 20 Å" in log  # the 10 Å template was rescaled


def test_pruning_protocols_chain(picked):
    project, _, _, pick, truth_a = picked
    # a second "picker": hand picks near 5 true particles plus 3 far from any particle
    hand = [list(p + 15.0) for p in truth_a[:5]] + [[900.0, 900.0, 0.0], [-900.0, 900.0, 0.0],
                                                      [900.0, -900.0, 0.0]]
    manual = project.run("pick.manual", inputs={"tomograms": "import.tomogram"},
                         params={"picks": {"TS_01": hand}}, executor="inline")
    consensus = project.run("particles.consensus", inputs={"particles": [pick.name, manual.name]},
                            params={"tolerance_a": 60.0, "min_sets": 2}, executor="inline")
    agreed = project.items(consensus, "particles")
    assert len(agreed) == 5
    assert all(p.score is not None for p in agreed)  # the template-matching member's fields
    deduplicated = project.run("particles.remove_duplicates", inputs={"particles": pick.name},
                               params={"distance_a": 1000.0}, executor="inline")
    assert len(project.items(deduplicated, "particles")) < len(project.items(pick, "particles"))
    scored = project.run("particles.filter", inputs={"particles": pick.name},
                         params={"min_score": 0.0, "region_min_a": [-2000, -2000, -2000],
                                 "region_max_a": [0, 2000, 2000]}, executor="inline")
    assert all(p.position_a[0] <= 0 for p in project.items(scored, "particles"))


def test_extract_writes_boxes_and_weights(picked):
    project, tomograms, _, pick, _ = picked
    run = project.run("particles.extract", inputs={"particles": pick.name,
                                                   "tomograms": tomograms.name},
                      params={"box_size_px": 20, "invert": True}, executor="inline")
    subtomograms = project.items(run, "subtomograms")
    assert len(subtomograms) == len(project.items(pick, "particles"))
    box, pixel = read_mrc(project.path(subtomograms[0].path))
    assert box.shape == (20, 20, 20) and pixel == pytest.approx(PIXEL_A)
    weight, _ = read_mrc(project.path(subtomograms[0].weight_path))
    assert weight[10, 10, 10] == 1 and weight[18, 10, 10] == 0  # kz in the missing wedge


def test_bad_inputs_are_rejected(picked, tmp_path):
    project, tomograms, _, pick, _ = picked
    absurd = project.run("import.volume", params={"files": [str(TEMPLATES / "4v4r.mrc")],
                                                  "pixel_size_a": 0.5}, executor="inline")
    with pytest.raises(InputError, match="outside 1/8"):
        project.run("pick.template", inputs={"tomograms": tomograms.name,
                                             "template": absurd.name}, executor="inline")
    other = write_mrc(tmp_path / "TS_99.mrc", np.zeros((8, 16, 16), np.float32), PIXEL_A)
    elsewhere = project.run("import.tomogram", params={"files": [str(other)]},
                            executor="inline")
    with pytest.raises(InputError, match="TS_01"):
        project.run("particles.extract", inputs={"particles": pick.name,
                                                 "tomograms": elsewhere.name}, executor="inline")
    with pytest.raises(InputError, match="no such file"):
        project.run("import.volume", params={"files": [str(tmp_path / "missing.mrc")]},
                    executor="inline")
