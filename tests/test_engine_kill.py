"""A run killed with SIGKILL mid-way and run again finishes without recomputing finished items."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import simulate_dataset

N_SERIES = 8


def _project_with_simulated_series(root, data_dir):
    if not (data_dir / "TS_01.mdoc").exists():
        simulate_dataset(data_dir, preset="tiny", seed=3, n_series=N_SERIES)
    project = Project.init(root)
    project.run("import.mdoc", params={"files": [str(data_dir / "*.mdoc")],
                                       "dose_per_tilt_e_a2": 3.0},
                name="import", executor="inline")
    return project


def _binned_outputs(project: Project, run_name: str) -> dict[str, np.ndarray]:
    return {ts.name: read_mrc(project.path(ts.tilts[0].image_path))[0]
            for ts in project.items(run_name)}


def _journal(root) -> list[tuple]:
    connection = sqlite3.connect(root / "project.sqlite", timeout=30)
    try:
        return connection.execute(
            "SELECT task, state, attempts, finished FROM journal WHERE run_id = 2").fetchall()
    finally:
        connection.close()


def test_sigkill_mid_run_then_resume_recomputes_nothing_finished(tmp_path):
    project = _project_with_simulated_series(tmp_path / "killed", tmp_path / "data")
    command = [sys.executable, "-m", "tomoweave.cli", "run", "tiltseries.bin", "-p",
               str(project.root), "--input", "tilt_series=import", "--set", "binning=2",
               "--name", "bin", "--workers", "1"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    finished_before_kill: list[tuple] = []
    while time.time() < deadline:
        done = [row for row in _journal(project.root) if row[1] == "done"]
        if done:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            finished_before_kill = [row for row in _journal(project.root) if row[1] == "done"]
            break
        time.sleep(0.002)
    assert 1 <= len(finished_before_kill) < N_SERIES, "the kill must land mid-run"

    resumed = subprocess.run([sys.executable, "-m", "tomoweave.cli", "resume", "bin", "-p",
                              str(project.root)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    journal = {row[0]: row for row in _journal(project.root)}
    assert all(row[1] == "done" for row in journal.values()) and len(journal) == N_SERIES
    for task, _, attempts, finished in finished_before_kill:
        assert journal[task][2] == attempts == 1  # not run again
        assert journal[task][3] == finished
    log = (project.root / project.get_run("bin").folder / "logs" / "run.log").read_text()
    assert log.count("unchanged since it finished, skipped") == len(finished_before_kill)

    connection = sqlite3.connect(project.root / "project.sqlite")
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
    assert not list((project.root / "runs").rglob(".*.tmp"))

    reference = _project_with_simulated_series(tmp_path / "uninterrupted", tmp_path / "data")
    reference.run("tiltseries.bin", inputs={"tilt_series": "import"}, params={"binning": 2},
                  name="bin", executor="local", workers=1)
    killed_outputs = _binned_outputs(Project.open(project.root), "bin")
    reference_outputs = _binned_outputs(reference, "bin")
    assert killed_outputs.keys() == reference_outputs.keys()
    for name, stack in killed_outputs.items():
        np.testing.assert_array_equal(stack, reference_outputs[name])
    killed_items = [ts.to_record() for ts in Project.open(project.root).items("bin")]
    reference_items = [ts.to_record() for ts in reference.items("bin")]
    assert sorted(killed_items, key=lambda r: r["name"]) == \
        sorted(reference_items, key=lambda r: r["name"])
