"""average.classify, average.mra, average.pca and average.spa_leap on a project: simulated
mixtures (sim.mixtures) written as premultiplied subtomograms with a RELION 3.1 STAR, imported
with import.subtomograms, classified; class_id / components read back from the outputs and
scored against the truth (particle pNNNN is the simulator's particle NNNN)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.protocols import classify_outputs as outputs
from tomoweave.sim import mixtures
from tomoweave.sim.metrics import adjusted_rand_index

DIAMETER = {"particle_diameter_a": 240.0}


def _order(items) -> np.ndarray:
    return np.array([int(item.name[1:]) for item in items])


def _imported(project: Project, star, name: str) -> str:
    run = project.run("import.subtomograms", params={"files": [str(star)]}, executor="inline",
                      name=name)
    assert run.state == "finished"
    return f"{name}.subtomograms"


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    particles = mixtures.two_species(80, fraction_first=0.5, seed=1)
    star = mixtures.write_subtomograms(root / "data", particles)
    project = Project.init(root / "project")
    return {"project": project, "input": _imported(project, star, "mixture"),
            "truth": particles, "root": root}


def _finished(project, run):
    assert run.state == "finished", (project.root / run.folder / "logs" / "run.log").read_text()


def test_classify_protocol_separates_the_species(mixture):
    project = mixture["project"]
    run = project.run("average.classify", inputs={"subtomograms": mixture["input"]},
                      params={"classes": 2, "max_iterations": 4, **DIAMETER},
                      executor="inline", name="classified")
    _finished(project, run)
    subtomograms = project.items(run, "subtomograms")
    labels = np.array([s.particle.class_id for s in subtomograms])
    truth = mixture["truth"].labels[_order(subtomograms)]
    assert adjusted_rand_index(labels, truth) >= 0.8
    classes = project.items(run, "classes")
    assert [c.class_id for c in classes] == [1, 2]  # classes count from 1, as in RELION
    assert sum(c.occupancy for c in classes) == pytest.approx(1.0, abs=1e-6)
    assert sum(c.particle_count for c in classes) == len(subtomograms)
    for item in classes:
        volume, pixel = read_mrc(project.path(item.path))
        assert volume.shape == (32, 32, 32) and pixel == pytest.approx(10.0)
        assert item.fsc and item.resolution_a > 0 and project.path(item.half1_path).exists()
    folder = project.root / run.folder / "outputs"
    for png in (outputs.OCCUPANCY_PNG, outputs.CLASSES_PNG):
        assert (folder / png).stat().st_size > 1000
    assert all(0.5 <= s.particle.score <= 1.0 for s in subtomograms)  # posterior of its class
    # exported to RELION 3.1 with the classes (rlnClassNumber), read back the same
    out = mixture["root"] / "export"
    export = project.run("export.relion31", inputs={"subtomograms": "classified.subtomograms"},
                         params={"out": str(out)}, executor="inline")
    _finished(project, export)
    from tomoweave.formats.relion_subtomograms import read_relion31_subtomograms

    back, _ = read_relion31_subtomograms(out / "particles.star")
    assert {s.name: s.particle.class_id for s in back} == {
        s.name: s.particle.class_id for s in subtomograms}


def test_mra_protocol_with_references_and_a_wrong_count(mixture):
    project, truth, root = mixture["project"], mixture["truth"], mixture["root"]
    paths = []
    for k, volume in enumerate(truth.maps):  # the species maps, as given references
        paths.append(str(write_mrc(root / f"species_{'ab'[k]}.mrc", volume, 10.0)))
    references = project.run("import.volume", params={"files": paths}, executor="inline",
                             name="references")
    _finished(project, references)
    run = project.run("average.mra", inputs={"subtomograms": mixture["input"],
                                             "reference": "references.volume"},
                      params={"classes": 2, "max_iterations": 3, "local_range_deg": 3.0,
                              "angular_step_deg": 3.0, **DIAMETER},
                      executor="inline", name="mra")
    _finished(project, run)
    subtomograms = project.items(run, "subtomograms")
    labels = np.array([s.particle.class_id for s in subtomograms])
    # with the species maps as references, class k is the species of the set's k-th volume
    species = np.array(["ab".index(v.name[-1]) for v in project.items(references, "volume")])
    assert np.mean(species[labels - 1] == truth.labels[_order(subtomograms)]) >= 0.9
    with pytest.raises(InputError, match="one per class"):
        project.run("average.mra", inputs={"subtomograms": mixture["input"],
                                           "reference": "references.volume"},
                    params={"classes": 3, **DIAMETER}, executor="inline", name="mra3")


def test_pca_protocol_follows_the_hinge(tmp_path):
    particles = mixtures.hinge_motion(100, seed=2)
    star = mixtures.write_subtomograms(tmp_path / "data", particles)
    project = Project.init(tmp_path / "project")
    run = project.run("average.pca", inputs={"subtomograms": _imported(project, star, "hinge")},
                      params={"components": 3, "clusters": 2, "trajectory_bins": 4,
                              "resolution_a": 25.0, **DIAMETER},
                      executor="inline", name="pca")
    _finished(project, run)
    subtomograms = project.items(run, "subtomograms")
    first = np.array([s.particle.components[0] for s in subtomograms])
    assert all(len(s.particle.components) == 3 for s in subtomograms)
    angles = particles.hinge_deg[_order(subtomograms)]
    assert abs(spearmanr(first, angles)[0]) >= 0.8
    assert len(project.items(run, "trajectory")) == 4
    assert len(project.items(run, "eigenvolumes")) == 3
    assert len(project.items(run, "classes")) == 2
    folder = project.root / run.folder / "outputs"
    assert (folder / outputs.SCATTER_PNG).exists() and (folder / outputs.EIGENVOLUMES_PNG).exists()


def test_spa_leap_protocol_prunes_junk_and_honours_a_selection(tmp_path):
    particles = mixtures.two_species(120, fraction_first=1.0, junk_fraction=0.3, seed=6)
    star = mixtures.write_subtomograms(tmp_path / "data", particles)
    project = Project.init(tmp_path / "project")
    source = _imported(project, star, "picked")
    params = {"classes": 8, "slab_a": 200.0, **DIAMETER}
    run = project.run("average.spa_leap", inputs={"subtomograms": source}, params=params,
                      executor="inline", name="leap")
    _finished(project, run)
    kept, rejected = project.items(run, "subtomograms"), project.items(run, "rejected")
    assert len(kept) + len(rejected) == 120
    true = particles.labels != mixtures.JUNK
    kept_true = true[_order(kept)]
    assert kept_true.mean() >= 0.9 and kept_true.sum() >= 0.9 * true.sum()
    assert (project.root / run.folder / "outputs" / outputs.GALLERY_PNG).exists()
    chosen = project.run("average.spa_leap", inputs={"subtomograms": source},
                         params={**params, "keep_classes": [1]}, executor="inline",
                         name="leap_chosen")
    _finished(project, chosen)
    assert {s.particle.class_id for s in project.items(chosen, "subtomograms")} <= {1}
