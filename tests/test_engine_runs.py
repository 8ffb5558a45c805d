"""The engine: per-item failures, resume by digest, retries, validation, streaming, moving projects."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats.mrc import read_mrc


def _import_stacks(project: Project, stack_factory, count: int, name="import"):
    stacks = [stack_factory(f"TS_{i:02d}", n_tilts=11, seed=i) for i in range(count)]
    run = project.run("import.tiltseries", params={"files": [str(s) for s in stacks],
                                                  "dose_per_tilt_e_a2": 3.0},
                      name=name, executor="inline")
    return run, stacks


def test_one_failing_item_does_not_stop_the_others(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    _, stacks = _import_stacks(project, stack_factory, 5)
    stacks[2].write_bytes(stacks[2].read_bytes()[:2000])  # the microscope PC lost half a file
    run = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                      params={"binning": 2}, executor="local", workers=2)
    assert run.state == "finished with failures"
    assert sorted(ts.name for ts in project.items(run)) == ["TS_00", "TS_01", "TS_03", "TS_04"]
    journal = project.catalog.journal(run.id)
    assert journal["TS_02"]["state"] == "failed"
    assert "TS_02.mrc" in journal["TS_02"]["error"]
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "TS_02: FAILED" in log


def test_resume_skips_finished_items_and_retries_failed_ones(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    _, stacks = _import_stacks(project, stack_factory, 3)
    original = stacks[1].read_bytes()
    stacks[1].write_bytes(b"not an MRC file at all" * 100)
    run = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                      params={"binning": 2}, name="bin", executor="inline")
    assert run.state == "finished with failures"
    outputs = run.record.folder
    done_times = {k: v["finished"] for k, v in project.catalog.journal(run.id).items()}
    stacks[1].write_bytes(original)  # the user fixes the file and continues the run
    run = project.execute("bin", executor="inline")
    journal = project.catalog.journal(run.id)
    assert run.state == "finished"
    assert journal["TS_00"]["finished"] == done_times["TS_00"]  # not recomputed
    assert journal["TS_00"]["attempts"] == 1 and journal["TS_01"]["attempts"] == 2
    assert len(project.items(run)) == 3
    binned, pixel_size = read_mrc(project.root / outputs / "outputs" / "TS_01.mrc")
    assert binned.shape == (11, 32, 32) and pixel_size == pytest.approx(20.0)


def test_changed_parameters_redo_every_item(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    _import_stacks(project, stack_factory, 2)
    project.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 2},
                name="bin", executor="inline")
    run = project.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 4},
                      name="bin", executor="inline")
    journal = project.catalog.journal(run.id)
    assert all(entry["attempts"] == 2 for entry in journal.values())
    assert {ts.image_size_xy for ts in project.items(run)} == {(16, 16)}
    assert project.items(run)[0].pixel_size_a == pytest.approx(40.0)


def test_bad_parameters_are_rejected_before_anything_is_recorded(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    _import_stacks(project, stack_factory, 1)
    runs_before = len(project.runs())
    with pytest.raises(InputError, match="binning"):
        project.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 0})
    with pytest.raises(InputError, match="no parameter 'bining'"):
        project.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"bining": 2})
    with pytest.raises(InputError, match="needs input 'tilt_series'"):
        project.run("tiltseries.bin", params={"binning": 2})
    assert len(project.runs()) == runs_before


def test_streaming_run_processes_items_as_their_producer_adds_them(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    first = stack_factory("TS_00", n_tilts=5)
    project.run("import.tiltseries", params={"files": [str(first)]}, name="import",
                executor="inline")
    import_set = project.output_set("import")
    project.catalog.set_state(import_set.id, "open")  # the producer is still collecting
    consumer = project.create_run("tiltseries.bin", {"tilt_series": "import"}, {"binning": 2},
                                  executor="inline")
    worker = threading.Thread(target=lambda: Project.open(project.root).execute(
        consumer.name, executor="inline"))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "a run whose input is open must wait for more items"
    second = stack_factory("TS_01", n_tilts=5)
    project.run("import.tiltseries", params={"files": [str(first), str(second)]},
                name="import", executor="inline")  # adds TS_01 and closes the set
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert sorted(ts.name for ts in project.items(consumer.name)) == ["TS_00", "TS_01"]
    assert project.get_run(consumer.name).state == "finished"


def test_a_copied_project_still_opens_and_finds_its_files(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    _import_stacks(project, stack_factory, 1)
    project.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 2},
                executor="inline")
    copy = shutil.copytree(project.root, tmp_path / "elsewhere" / "copy", symlinks=True)
    shutil.rmtree(project.root)
    moved = Project.open(copy)
    for run in moved.runs():
        for series in moved.items(run):
            assert moved.path(series.tilts[0].image_path).is_file()
    rerun = moved.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 4},
                      executor="inline")
    assert rerun.state == "finished"


def test_watch_mode_import_feeds_a_downstream_run_as_series_arrive(tmp_path, shared_data):
    import mrcfile

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    project = Project.init(tmp_path / "project")

    def acquire(name: str) -> None:
        with mrcfile.new(incoming / f"{name}.mrc") as stack:
            stack.set_data(np.zeros((41, 16, 16), dtype=np.float32))
            stack.voxel_size = 5.4
        text = (shared_data / "serialem" / "TS_01.mdoc").read_text()
        (incoming / f"{name}.mdoc").write_text(text.replace("TS_01.mrc", f"{name}.mrc"))

    acquire("TS_01")
    importer = project.create_run("import.mdoc", params={
        "files": [str(incoming / "*.mdoc")], "watch": True, "settle_s": 0.2,
        "stop_after_idle_s": 12.0, "dose_per_tilt_e_a2": 3.0}, name="import", executor="inline")
    consumer = project.create_run("tiltseries.bin", {"tilt_series": "import"}, {"binning": 2},
                                  name="bin", executor="inline")
    threads = [threading.Thread(target=lambda n=n: Project.open(project.root).execute(
        n, executor="inline")) for n in (importer.name, consumer.name)]
    for thread in threads:
        thread.start()
        time.sleep(0.5)
    # TS_01 is processed while the importer still watches (it waits 12 s after the last
    # arrival): polled, not slept, so a loaded machine is slower but not wrong
    deadline = time.monotonic() + 10.0
    while not project.items("bin") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [ts.name for ts in project.items("bin")] == ["TS_01"]  # processed before the end
    assert project.get_run("import").state == "running"
    acquire("TS_02")
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(ts.name for ts in project.items("bin")) == ["TS_01", "TS_02"]
    assert project.get_run("bin").state == "finished"


def test_the_same_run_on_a_dask_cluster_gives_the_same_result(tmp_path, stack_factory):
    project = Project.init(tmp_path / "project")
    _import_stacks(project, stack_factory, 3)
    local = project.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 2},
                        executor="inline")
    on_dask = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                          params={"binning": 2}, executor="dask", workers=2)
    assert on_dask.state == "finished"
    assert on_dask.record.provenance["executor"] == "DaskExecutor"
    by_name = sorted(project.items(local), key=lambda ts: ts.name)
    for a, b in zip(by_name, sorted(project.items(on_dask), key=lambda ts: ts.name), strict=True):
        np.testing.assert_array_equal(read_mrc(project.path(a.tilts[0].image_path))[0],
                                      read_mrc(project.path(b.tilts[0].image_path))[0])
