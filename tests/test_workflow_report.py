"""Workflows (run, export, replay), the HTML report and the methods text."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from test_import_cli import tomoweave

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.workflow import load_workflow


def _workflow(tmp_path, stack) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"runs": [
        {"name": "bin4", "protocol": "tiltseries.bin", "inputs": {"tilt_series": "raw"},
         "params": {"binning": 4}},  # listed before its input: run-workflow orders them
        {"name": "raw", "protocol": "import.tiltseries",
         "params": {"files": ["${TEST_DATA}/" + stack.name], "dose_per_tilt_e_a2": 2.5}},
    ]}))
    return str(path)


def test_run_workflow_then_export_and_replay_on_a_new_project(tmp_path, stack_factory,
                                                               monkeypatch):
    stack = stack_factory("TS_03", n_tilts=11)
    monkeypatch.setenv("TEST_DATA", str(stack.parent))
    first = tmp_path / "first"
    tomoweave("run-workflow", _workflow(tmp_path, stack), "-p", first)
    runs = json.loads(tomoweave("status", "-p", first, "--json").stdout)
    assert [(r["name"], r["state"]) for r in runs] == [("raw", "finished"), ("bin4", "finished")]

    exported = tmp_path / "exported.yaml"
    tomoweave("export-workflow", "-p", first, "--out", exported)
    replay = load_workflow(exported)
    assert [r["name"] for r in replay] == ["raw", "bin4"]
    assert replay[1]["params"] == {"binning": 4.0} and replay[1]["inputs"] == {"tilt_series": "raw"}

    second = tmp_path / "second"
    tomoweave("run-workflow", exported, "-p", second)
    a, b = Project.open(first), Project.open(second)
    assert [ts.to_record() for ts in a.items("bin4")] == [ts.to_record() for ts in b.items("bin4")]


def test_workflow_with_a_cycle_or_no_protocol_is_rejected(tmp_path):
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text(yaml.safe_dump({"runs": [
        {"name": "a", "protocol": "tiltseries.bin", "inputs": {"tilt_series": "b"}},
        {"name": "b", "protocol": "tiltseries.bin", "inputs": {"tilt_series": "a"}}]}))
    with pytest.raises(InputError, match="depends on itself"):
        load_workflow(cyclic)
    broken = tmp_path / "broken.yaml"
    broken.write_text("runs:\n  - name: x\n")
    with pytest.raises(InputError, match="broken.yaml: run #1: 'protocol' missing"):
        load_workflow(broken)


def test_report_shows_runs_parameters_and_a_picture_per_output(tmp_path, stack_factory):
    stack = stack_factory("TS_05", n_tilts=11)
    project = Project.init(tmp_path / "project")
    project.run("import.tiltseries", params={"files": [str(stack)]}, name="raw",
                executor="inline")
    project.run("tiltseries.bin", inputs={"tilt_series": "raw"}, params={"binning": 2},
                executor="inline")
    tomoweave("report", "-p", project.root)
    page = (project.root / "report.html").read_text()
    assert "tiltseries.bin" in page and "binning" in page and "finished" in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= 2
    assert all((project.root / image).is_file() for image in images)
    methods = tomoweave("methods", "-p", project.root).stdout
    assert "binning = 2.0" in methods and "tomoweave" in methods


def test_streaming_workflow_processes_series_during_collection(tmp_path, shared_data):
    import threading
    import time

    import mrcfile
    import numpy as np

    from tomoweave.workflow import stream_workflow

    incoming = tmp_path / "incoming"
    incoming.mkdir()

    def acquire(name: str) -> None:
        with mrcfile.new(incoming / f"{name}.mrc") as stack:
            stack.set_data(np.ones((41, 16, 16), dtype=np.float32))
            stack.voxel_size = 5.4
        text = (shared_data / "serialem" / "TS_01.mdoc").read_text()
        (incoming / f"{name}.mdoc").write_text(text.replace("TS_01.mrc", f"{name}.mrc"))

    workflow = tmp_path / "live.yaml"
    workflow.write_text(yaml.safe_dump({"runs": [
        {"name": "live", "protocol": "import.mdoc",
         "params": {"files": [str(incoming / "*.mdoc")], "watch": True, "settle_s": 0.2,
                    "stop_after_idle_s": 4.0}},
        {"name": "bin2", "protocol": "tiltseries.bin", "inputs": {"tilt_series": "live"},
         "params": {"binning": 2}}]}))
    acquire("TS_01")
    project = Project.init(tmp_path / "project")
    session = threading.Thread(target=stream_workflow, args=(project, workflow, "inline"))
    session.start()
    deadline = time.time() + 30
    while time.time() < deadline and "bin2" not in {r.name for r in project.catalog.runs()}:
        time.sleep(0.1)  # the session creates its runs one after the other
    while time.time() < deadline and not [
            r for r in project.catalog.journal(project.get_run("bin2").id).values()
            if r["state"] == "done"]:
        time.sleep(0.1)
    assert session.is_alive(), "the session must still be watching for data"
    acquire("TS_02")
    session.join(timeout=60)
    assert sorted(ts.name for ts in project.items("bin2")) == ["TS_01", "TS_02"]
    assert [r.state for r in project.runs()] == ["finished", "finished"]


def test_the_packaged_demo_workflow_names_real_protocols_parameters_and_inputs():
    from tomoweave.api import validate_params
    from tomoweave.cli.cmd_workflow import demo_workflow_path
    from tomoweave.engine.registry import get_protocol

    entries = load_workflow(demo_workflow_path(), {"TOMOWEAVE_PROJECT": "/project"})
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)) and len(entries) >= 15
    for position, entry in enumerate(entries):
        protocol_class = get_protocol(entry["protocol"])
        validate_params(protocol_class, entry["params"])
        assert set(entry["inputs"]) <= set(protocol_class.inputs), entry["name"]
        for value in entry["inputs"].values():
            for reference in value if isinstance(value, list) else [value]:
                producer = reference.split(".")[0]
                assert producer in names[:position], f"{entry['name']} reads {reference} first"
