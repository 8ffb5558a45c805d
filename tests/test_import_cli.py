"""`tomoweave import` on real SerialEM files, and bad input that must leave the project as it was."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from conftest import snapshot_project, write_stack

TOMOWEAVE = [sys.executable, "-m", "tomoweave.cli"]


def tomoweave(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([*TOMOWEAVE, *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tomoweave {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture
def ts01(tmp_path, shared_data) -> Path:
    """TS_01.mdoc with its 41-slice 924×958 stack beside it (sparse file, no data written)."""
    folder = tmp_path / "microscope"
    folder.mkdir()
    mdoc = Path(shutil.copy(shared_data / "serialem" / "TS_01.mdoc", folder))
    stack = mrcfile.new_mmap(folder / "TS_01.mrc", shape=(41, 958, 924), mrc_mode=2)
    stack.voxel_size = 5.4
    stack.close()
    return mdoc


@pytest.fixture
def project(tmp_path) -> Path:
    tomoweave("init", tmp_path / "project")
    return tmp_path / "project"


def test_import_mdoc_gives_the_mdoc_tilts_pixel_size_axis_and_order(ts01, project):
    tomoweave("import", "mdoc", ts01, "-p", project, "--dose-per-tilt", 3)
    shown = json.loads(tomoweave("show", "import.mdoc.tilt_series", "-p", project, "--json").stdout)
    assert shown["count"] == 1
    series = shown["items"][0]
    text = ts01.read_text()
    angles = [float(v) for v in re.findall(r"^TiltAngle = (\S+)", text, re.M)]
    stamps = [datetime.strptime(" ".join(v.split()), "%d-%b-%y %H:%M:%S")
              for v in re.findall(r"^DateTime = (.+)$", text, re.M)]
    assert len(series["tilts"]) == 41
    assert [t["tilt_deg"] for t in series["tilts"]] == angles
    assert series["pixel_size_a"] == 5.4 and series["tilt_axis_deg"] == 85.3
    assert tuple(series["image_size_xy"]) == (924, 958)
    by_time = sorted(range(41), key=lambda i: stamps[i])
    assert [t["acquisition_order"] for t in series["tilts"]] == [by_time.index(i) for i in range(41)]
    first_exposed = by_time[0]
    assert series["tilts"][first_exposed]["pre_exposure_e_a2"] == 0.0
    assert series["tilts"][by_time[-1]]["pre_exposure_e_a2"] == pytest.approx(3.0 * 40)
    stack = project / series["tilts"][0]["image_path"]
    assert not Path(series["tilts"][0]["image_path"]).is_absolute() and stack.exists()


def test_import_mdoc_movies_found_by_windows_subframe_names(ts01, project, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    names = [n.split("\\")[-1] for n in re.findall(r"^SubFramePath = (.+)$", ts01.read_text(), re.M)]
    for name in names:
        with mrcfile.new(frames / name) as movie:
            movie.set_data(np.zeros((8, 16, 16), dtype=np.float32))
    tomoweave("import", "mdoc", ts01, "-p", project, "--frames-dir", frames, "--name", "movies")
    series = json.loads(tomoweave("show", "movies.tilt_series", "-p", project, "--json").stdout)
    tilts = series["items"][0]["tilts"]
    assert [Path(t["movie_path"]).name for t in tilts] == names
    assert all(t["frame_count"] == 8 for t in tilts)
    assert all((project / t["movie_path"]).is_file() for t in tilts)


def _assert_one_line_error_and_intact(project: Path, args: list, *expected: str) -> None:
    before = snapshot_project(project)
    result = tomoweave(*args, "-p", project, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert snapshot_project(project) == before


def test_truncated_mdoc_is_rejected_naming_the_file(ts01, project):
    text = ts01.read_text()
    ts01.write_text(text[: text.index("[ZValue = 20]") + 30])
    _assert_one_line_error_and_intact(project, ["import", "mdoc", ts01], "TS_01.mdoc")


def test_mdoc_whose_frames_are_missing_is_rejected(ts01, project, tmp_path):
    (tmp_path / "empty_frames").mkdir()
    _assert_one_line_error_and_intact(
        project, ["import", "mdoc", ts01, "--frames-dir", tmp_path / "empty_frames"],
        "TS_01.mdoc", "not found", "TS_01_000_0.0.mrc")


def test_stack_whose_slice_count_disagrees_with_tlt(project, tmp_path):
    stack = write_stack(tmp_path / "TS_07.mrc", 21)
    stack.with_suffix(".tlt").write_text("".join(f"{a}\n" for a in range(-60, 61, 3)))
    _assert_one_line_error_and_intact(
        project, ["import", "tiltseries", stack, "--pixel-size", 10], "TS_07.mrc", "21", "41")


def test_non_mrc_file_named_mrc(project, tmp_path):
    fake = tmp_path / "TS_09.mrc"
    fake.write_text("this is a text file\n" * 100)
    (tmp_path / "TS_09.tlt").write_text("0\n")
    _assert_one_line_error_and_intact(project, ["import", "tiltseries", fake, "--pixel-size", 10],
                                      "TS_09.mrc", "MRC")


def test_import_tiltseries_with_the_issue_options(project, tmp_path):
    stack = write_stack(tmp_path / "lamella.mrc", 41, pixel_size_a=0.0)
    tomoweave("import", "tiltseries", stack, "--tilts", stack.with_suffix(".tlt"), "--pixel-size",
              2.7, "--tilt-axis", 84.5, "--voltage", 300, "--cs", 2.7, "--amplitude-contrast", 0.1,
              "--dose-per-tilt", 3.5, "-p", project)
    series = json.loads(tomoweave("show", "import.tiltseries", "-p", project, "--json").stdout)
    item = series["outputs"]["tilt_series"]["items"][0]
    assert item["acquisition"] == {"pixel_size_a": 2.7, "voltage_kv": 300.0,
                                   "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.1,
                                   "dose_per_tilt_e_a2": 3.5, "tilt_axis_deg": 84.5}
    pre = sorted(t["pre_exposure_e_a2"] for t in item["tilts"])
    assert pre == pytest.approx([3.5 * i for i in range(41)])


def test_status_lists_runs_in_creation_order(project, tmp_path):
    stack = write_stack(tmp_path / "TS_01.mrc", 11)
    tomoweave("import", "tiltseries", stack, "-p", project)
    tomoweave("run", "tiltseries.bin", "-p", project, "--input", "tilt_series=import.tiltseries",
              "--set", "binning=2")
    runs = json.loads(tomoweave("status", "-p", project, "--json").stdout)
    assert [(r["name"], r["protocol"], r["state"]) for r in runs] == [
        ("import.tiltseries", "import.tiltseries", "finished"),
        ("tiltseries.bin", "tiltseries.bin", "finished")]
    failed = tomoweave("run", "tiltseries.bin", "-p", project, "--input", "tilt_series=nope",
                       check=False)
    assert failed.returncode != 0 and "nope" in failed.stderr
