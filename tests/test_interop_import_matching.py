"""Which tilt series an imported alignment goes onto (issue 11, "import.imod matches by series
name only"): by name, by explicit mapping, or the only series there is; a file that matches none
is refused in one line naming both, and a symbolic link's own name is the name that counts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot_project, write_stack

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats.imod import read_xf

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imod"
PIXEL_A = 2.5


@pytest.fixture
def project(tmp_path) -> Project:
    return Project.init(tmp_path / "project")


def _imod_files(folder: Path, name: str) -> Path:
    """The real IMOD alignment tilt_1 (59 tilts) under another name."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".xf", ".tlt", ".xtilt"):
        shutil.copy(DATA / f"tilt_1{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.xf"


def _stack_run(project: Project, tmp_path: Path, name: str) -> str:
    stack = write_stack(tmp_path / "stacks" / f"{name}.mrc", 59, size_yx=(16, 16),
                        pixel_size_a=PIXEL_A)
    shutil.copy(DATA / "tilt_1.tlt", stack.with_suffix(".tlt"))
    return project.run("import.tiltseries", params={"files": [str(stack)]},
                       executor="inline", name=f"stack_{name}").name


def _assert_imod_shifts(series, pixel_a: float) -> None:
    """Shifts in Å = IMOD's pixels × the series' pixel size (−M⁻¹d)."""
    xf = read_xf(DATA / "tilt_1.xf")
    expected = -np.einsum("nij,nj->ni", np.linalg.inv(xf[:, :, :2]), xf[:, :, 2]) * pixel_a
    got = np.array([[t.alignment.shift_x_a, t.alignment.shift_y_a] for t in series.tilts])
    assert np.abs(got - expected).max() < 0.51 * pixel_a  # within IMOD's half-pixel centre


def test_alignment_named_unlike_every_input_series_is_refused(project, tmp_path):
    stacks = [write_stack(tmp_path / "stacks" / f"{name}.mrc", 59, size_yx=(16, 16),
                          pixel_size_a=PIXEL_A) for name in ("TS.stack", "TS_02")]
    both = project.run("import.tiltseries", params={"files": [str(s) for s in stacks]},
                       executor="inline", name="both").name
    xf = _imod_files(tmp_path / "imod", "TS")
    before = snapshot_project(project.root)
    with pytest.raises(InputError) as refused:
        project.run("import.imod", inputs={"tilt_series": both}, params={"files": [str(xf)]},
                    executor="inline")
    message = str(refused.value)
    assert "\n" not in message and "TS.xf" in message and "TS.stack" in message, message
    assert snapshot_project(project.root) == before


def test_the_only_input_series_takes_the_alignment(project, tmp_path):
    stack = _stack_run(project, tmp_path, "TS.stack")
    xf = _imod_files(tmp_path / "imod", "TS")
    run = project.run("import.imod", inputs={"tilt_series": stack}, params={"files": [str(xf)]},
                      executor="inline")
    (series,) = project.items(run, "tilt_series")
    assert series.name == "TS.stack" and series.pixel_size_a == PIXEL_A
    assert all(t.image_path for t in series.tilts)  # the stack's images are kept
    _assert_imod_shifts(series, PIXEL_A)


def test_explicit_mapping_puts_the_alignment_on_the_named_series(project, tmp_path):
    _stack_run(project, tmp_path, "TS.stack")
    both = project.run("import.tiltseries", params={"files": [
        str(tmp_path / "stacks" / "TS.stack.mrc"),
        str(write_stack(tmp_path / "stacks" / "TS_02.mrc", 59, size_yx=(16, 16),
                        pixel_size_a=4.0))]}, executor="inline", name="both").name
    xf = _imod_files(tmp_path / "imod", "TS")
    for mapping in (["TS.stack"], ["TS=TS.stack"]):
        run = project.run("import.imod", inputs={"tilt_series": both},
                          params={"files": [str(xf)], "series": mapping}, executor="inline")
        (series,) = project.items(run, "tilt_series")
        assert series.name == "TS.stack"
        _assert_imod_shifts(series, PIXEL_A)
    with pytest.raises(InputError, match="no tilt series 'TS_03' in the input"):
        project.run("import.imod", inputs={"tilt_series": both},
                    params={"files": [str(xf)], "series": ["TS_03"]}, executor="inline")


def test_a_symbolic_links_own_name_counts(project, tmp_path):
    run_name = project.run("import.tiltseries", params={"files": [
        str(write_stack(tmp_path / "stacks" / "TS_07.mrc", 59, size_yx=(16, 16),
                        pixel_size_a=PIXEL_A)),
        str(write_stack(tmp_path / "stacks" / "TS_08.mrc", 59, size_yx=(16, 16),
                        pixel_size_a=PIXEL_A))]}, executor="inline").name
    target = _imod_files(tmp_path / "scratch" / "run3", "align")
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(target, links / "TS_08.xf")  # the .tlt/.xtilt are found beside the target
    run = project.run("import.imod", inputs={"tilt_series": run_name},
                      params={"files": [str(links / "TS_08.xf")]}, executor="inline")
    (series,) = project.items(run, "tilt_series")
    assert series.name == "TS_08"
    _assert_imod_shifts(series, PIXEL_A)


def test_pixel_shifts_without_a_pixel_size_are_refused(project, tmp_path):
    xf = _imod_files(tmp_path / "imod", "TS_01")
    with pytest.raises(InputError, match=r"TS_01.xf: its shifts are in pixels.*--pixel-size"):
        project.run("import.imod", params={"files": [str(xf)]}, executor="inline")
    run = project.run("import.imod", params={"files": [str(xf)], "pixel_size_a": PIXEL_A},
                      executor="inline")
    (series,) = project.items(run, "tilt_series")
    assert series.pixel_size_a == PIXEL_A
    _assert_imod_shifts(series, PIXEL_A)
