"""average.initial_model (issue 12): an imported map is brought to the particles' pixel size
and box, low-passed, with a reference-bias warning. (Reference-free: test_average_no_priors.)"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from averaging_scaffold import template_map
from averaging_star import write_star_set

from tomoweave.algorithms import fourier
from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.sim.oracle import resolution_to_truth_a

BOX, PIXEL_A, DIAMETER_A = 32, 12.0, 280.0


def _log(project, run) -> str:
    return (project.root / run.folder / "logs" / "run.log").read_text()


def test_imported_volume_is_resampled_lowpassed_and_warned(tmp_path):
    star_set = write_star_set(tmp_path / "data", count=8, box_px=BOX, pixel_size_a=PIXEL_A)
    fine = template_map("4v4r", 64, 6.0)  # another pixel size and box than the particles
    write_mrc(tmp_path / "ref.mrc", fine, 6.0)
    project = Project.init(tmp_path / "project")
    project.run("import.subtomograms", params={"files": [str(star_set.star)]},
                executor="inline", name="imported")
    project.run("import.volume", params={"files": [str(tmp_path / "ref.mrc")]},
                executor="inline", name="ref")
    run = project.run("average.initial_model", inputs={"subtomograms": "imported.subtomograms",
                                                       "reference": "ref"},
                      params={"method": "volume", "particle_diameter_a": DIAMETER_A,
                              "resolution_a": 50.0}, executor="inline", name="model")
    assert run.state == "finished", _log(project, run)
    assert "reference bias" in _log(project, run)
    (model,) = project.items(run, "model")
    volume, pixel = read_mrc(project.path(model.path))
    assert volume.shape == (BOX,) * 3 and pixel == pytest.approx(PIXEL_A)
    spectrum = np.abs(scipy.fft.rfftn(volume)) ** 2
    frequency = np.sqrt(sum(k ** 2 for k in fourier.rfft_frequencies(volume.shape))) / PIXEL_A
    beyond = spectrum[frequency > 1 / 50.0 + 2.0 / (BOX * PIXEL_A)].sum()
    assert beyond <= 1e-6 * spectrum.sum()  # nothing past the low-pass and its 2-voxel edge
    target = template_map("4v4r", BOX, PIXEL_A)
    assert resolution_to_truth_a(volume, target, PIXEL_A)[0] <= 55.0


def test_symmetry_expansion_copies_each_particle_per_operator(tmp_path):
    from tomoweave.geometry.symmetry import symmetry_operators

    star_set = write_star_set(tmp_path / "data", count=3, box_px=16, pixel_size_a=PIXEL_A)
    project = Project.init(tmp_path / "project")
    project.run("import.subtomograms", params={"files": [str(star_set.star)]},
                executor="inline", name="imported")
    run = project.run("average.symmetry_expand", inputs={"subtomograms": "imported"},
                      params={"symmetry": "d7"}, executor="inline", name="expanded")
    assert run.state == "finished"
    originals = {s.name: s for s in project.items("imported", "subtomograms")}
    copies = project.items(run, "subtomograms")
    assert len(copies) == 14 * len(originals)
    operators = symmetry_operators("D7")
    for copy in copies:
        name, _, index = copy.name.rpartition("_s")
        original = originals[name]
        expected = original.particle.rotation_matrix @ operators[int(index) - 1]
        np.testing.assert_allclose(copy.particle.rotation_matrix, expected, atol=1e-9)
        assert copy.path == original.path and copy.particle.position_a == \
            original.particle.position_a
    from pydantic import ValidationError

    from tomoweave.protocols.average import ExpandParams

    with pytest.raises(ValidationError, match="expected C<n>, D<n>, T, O or I"):
        ExpandParams(symmetry="X5")


def test_refine_bad_input_gets_one_clear_line(tmp_path):
    star_set = write_star_set(tmp_path / "data", count=4, box_px=16, pixel_size_a=PIXEL_A)
    write_mrc(tmp_path / "mask.mrc", np.ones((20, 20, 20), np.float32), PIXEL_A)
    project = Project.init(tmp_path / "project")
    project.run("import.subtomograms", params={"files": [str(star_set.star)]},
                executor="inline", name="imported")
    project.run("import.volume", params={"files": [str(tmp_path / "mask.mrc")]},
                executor="inline", name="mask")
    run = project.run("average.refine", inputs={"subtomograms": "imported", "mask": "mask"},
                      params={"particle_diameter_a": 150.0}, executor="inline", name="bad")
    assert run.state == "failed"
    errors = [j["error"] for j in project.catalog.journal(run.id).values()]
    assert errors == ["mask mask: shape (20, 20, 20), expected the particles' box 16³"]
