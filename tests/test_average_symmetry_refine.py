"""Symmetry in average.refine (issue 12): a D7 particle (the 3j9i proteasome template averaged
over RELION's D7 operators, so it is exactly D7 in RELION's axes) refined with D7 reaches a
better gold-standard resolution than with C1 on the same particles — by at least one Fourier
shell, as √14 times more signal per orientation should give. (That tomoweave's operators are
RELION's is tests/test_average_symmetry.py's proof, against maps relion_image_handler
symmetrised.)"""

from __future__ import annotations

import numpy as np
import pytest
from averaging_scaffold import template_map
from averaging_star import write_star_set

from tomoweave.algorithms import volumes
from tomoweave.api import Project
from tomoweave.geometry.symmetry import symmetry_operators

BOX, PIXEL_A = 28, 8.0


@pytest.mark.slow
def test_d7_refinement_beats_c1_on_the_same_particles(tmp_path):
    template = template_map("3j9i", BOX, PIXEL_A)
    truth = np.mean([volumes.rotate_volume(template, op) for op in symmetry_operators("D7")],
                    axis=0).astype(np.float32)
    star_set = write_star_set(tmp_path / "data", count=40, box_px=BOX, pixel_size_a=PIXEL_A,
                              noise=1.0, truth=truth / truth.max())
    project = Project.init(tmp_path / "project")
    project.run("import.subtomograms", params={"files": [str(star_set.star)]},
                executor="inline", name="imported")
    resolutions = {}
    for symmetry in ("C1", "D7"):
        run = project.run("average.refine", inputs={"subtomograms": "imported.subtomograms"},
                          params={"particle_diameter_a": 180.0, "symmetry": symmetry,
                                  "max_iterations": 6}, executor="inline", name=symmetry)
        assert run.state == "finished"
        (average,) = project.items(run, "average")
        assert average.symmetry == symmetry
        resolutions[symmetry] = average.resolution_a
    shell = 1.0 / (BOX * PIXEL_A)
    assert 1 / resolutions["D7"] - 1 / resolutions["C1"] >= shell, resolutions
