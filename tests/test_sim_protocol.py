"""The simulate protocol in a project, and `tomoweave simulate` without one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats.mdoc import read_mdoc
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import load_truth


def test_simulate_protocol_gives_tilt_series_and_truth(tmp_path):
    project = Project.init(tmp_path / "proj")
    run = project.run("simulate", params={"preset": "tiny", "seed": 3, "n_series": 2,
                                          "movies_on": True}, executor="inline")
    assert run.state == "finished"
    series = sorted(project.items(run, "tilt_series"), key=lambda s: s.name)
    assert [s.name for s in series] == ["TS_01", "TS_02"]
    first = series[0]
    assert len(first.tilts) == 11 and first.pixel_size_a == 16.0
    assert [t.acquisition_order for t in first.tilts] == list(range(11))
    assert [t.image_index for t in first.tilts] == list(range(11))
    assert first.tilts[2].tilt_deg == -10.0 and first.tilts[2].pre_exposure_e_a2 == 6.0
    stack, pixel_size_a = read_mrc(project.path(first.tilts[0].image_path))
    assert stack.shape == (11, 64, 64) and pixel_size_a == pytest.approx(16.0)
    assert first.tilts[0].frame_count == 4
    frames, _ = read_mrc(project.path(first.tilts[4].movie_path))
    assert frames.shape == (4, 64, 64)
    assert project.path(first.tilts[4].movie_path).name == "TS_01_004_20.0.mrc"
    mdoc = read_mdoc(project.path(first.mdoc_path))
    assert mdoc.tilt_angles_deg == [t.tilt_deg for t in first.tilts]
    truth = load_truth(project.path(first.mdoc_path).parent / "truth" / "TS_01.json")
    assert truth.tilts[5].nominal_tilt_deg == first.tilts[5].tilt_deg
    particles = project.items(run, "true_particles")
    assert len(particles) == len(truth.placed_particles) + len(
        load_truth(project.path(first.mdoc_path).parent / "truth" / "TS_02.json").placed_particles)
    assert list(project.path(first.mdoc_path).parent.glob("TS_01_overview.png"))


def test_simulate_protocol_feeds_the_next_step(tmp_path):
    project = Project.init(tmp_path / "proj")
    sim = project.run("simulate", params={"preset": "tiny", "seed": 1}, executor="inline")
    binned = project.run("tiltseries.bin", inputs={"tilt_series": sim.name},
                         params={"binning": 2}, executor="inline")
    assert binned.state == "finished"
    item = project.items(binned, "tilt_series")[0]
    assert item.pixel_size_a == 32.0
    assert read_mrc(project.path(item.tilts[0].image_path))[0].shape == (11, 32, 32)


def test_bad_simulation_settings_leave_the_project_untouched(tmp_path):
    project = Project.init(tmp_path / "proj")
    with pytest.raises(InputError, match="tilt_min_deg must not exceed"):
        project.run("simulate", params={"preset": "tiny", "tilt_min_deg": 40,
                                        "tilt_max_deg": 10}, executor="inline")
    assert project.catalog.runs() == []


def test_cli_simulate_writes_files_without_a_project(tmp_path):
    from tomoweave.cli import app

    result = CliRunner().invoke(app, ["simulate", "tiny", str(tmp_path / "out"), "--seed", "2",
                                      "--n-series", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [s["name"] for s in report["series"]] == ["TS_01", "TS_02"]
    truth = load_truth(report["series"][1]["truth"])
    stack, _ = read_mrc(report["series"][1]["stack"])
    assert stack.shape[0] == len(truth.tilts) == 11
    assert np.isfinite(stack).all()
    again = CliRunner().invoke(app, ["simulate", "nonsense", str(tmp_path / "bad")])
    assert again.exit_code != 0 and "unknown simulation preset" in again.output


def test_import_mdoc_reads_simulated_series_as_the_truth_says(tmp_path):
    from tomoweave.sim import simulate_dataset

    data = simulate_dataset(tmp_path / "data", preset="tiny", seed=4, movies_on=True)
    truth = data.series[0].truth()
    project = Project.init(tmp_path / "proj")
    stacks = project.run("import.mdoc", params={"files": [str(data.series[0].mdoc_path)]},
                         executor="inline")
    movies = project.run("import.mdoc", params={"files": [str(data.series[0].mdoc_path)],
                                                "frames_dir": str(data.out_dir / "frames")},
                         executor="inline")
    for run in (stacks, movies):
        assert run.state == "finished"
        item = project.items(run, "tilt_series")[0]
        assert item.pixel_size_a == truth.pixel_size_a
        assert item.acquisition.tilt_axis_deg == truth.nominal_tilt_axis_deg
        assert [t.tilt_deg for t in item.tilts] == [t.nominal_tilt_deg for t in truth.tilts]
        assert [t.acquisition_order for t in item.tilts] == [
            t.acquisition_order for t in truth.tilts]
        np.testing.assert_allclose([t.pre_exposure_e_a2 for t in item.tilts],
                                   [t.pre_exposure_e_a2 for t in truth.tilts])
        assert item.tilts[0].nominal_defocus_a == pytest.approx(truth.nominal_defocus_a)
    movie_item = project.items(movies, "tilt_series")[0]
    assert [project.path(t.movie_path).name for t in movie_item.tilts] == [
        t.movie_file for t in truth.tilts]
    assert all(t.frame_count == 4 for t in movie_item.tilts)
