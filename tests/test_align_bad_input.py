"""Tilt images alignment cannot use (NaN, constant) are refused with one clear line, and the
project stays intact."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pytest

from tomoweave.api import Project


@pytest.mark.parametrize("defect, words", [("nan", ["NaN", "slice 2", "tilt 0°"]),
                                           ("constant", ["constant", "slice 2", "tilt 0°"])])
@pytest.mark.parametrize("protocol", ["align.xcorr", "align.patch"])
def test_unusable_tilt_image_is_one_clear_line(tmp_path, defect, words, protocol):
    stack = np.random.default_rng(0).normal(0, 1, (5, 64, 64)).astype(np.float32)
    stack[2] = np.nan if defect == "nan" else 7.0
    path = tmp_path / "data" / "ts_bad.mrc"
    path.parent.mkdir()
    # written as another program would (tomoweave refuses NaN); mrcfile warns of the NaN
    with warnings.catch_warnings(), mrcfile.new(path) as mrc:
        warnings.simplefilter("ignore", RuntimeWarning)
        mrc.set_data(stack)
        mrc.set_image_stack()
        mrc.voxel_size = 10.0
    path.with_suffix(".tlt").write_text("\n".join(f"{t:.1f}" for t in (-40, -20, 0, 20, 40)))
    project = Project.init(tmp_path / "project")
    imported = project.run("import.tiltseries", params={"files": [str(path)]}, executor="inline")
    assert imported.state == "finished"
    run = project.run(protocol, inputs={"tilt_series": imported.name}, executor="inline")
    assert run.state in ("failed", "finished with failures")
    error = next(iter(project.catalog.journal(run.id).values()))["error"]
    assert len(error.splitlines()) == 1 and "ts_bad.mrc" in error, error
    for word in words:
        assert word in error, error
    assert "exclude" in error
    # the project is intact: the imported series is still there, the failed run made nothing
    assert len(project.items(imported, "tilt_series")) == 1
    assert project.items(run, "tilt_series") == []
