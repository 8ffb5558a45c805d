"""Faults at scale (issue 13, item 5): a worker killed with SIGKILL mid-task, a full disk while
an output is written. (The scheduler killed with SIGKILL and resumed: test_engine_kill.py.)
After each, the outputs equal those of an undisturbed run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from engine_protocols import Killable  # noqa: F401  (registers test.killable)

from tomoweave.api import Project

WAIT_SECONDS = 120.0


def _names(project: Project, run) -> list[str]:
    return project.items(run).names.tolist()


def _wait_for(path: Path, thread: threading.Thread) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.exists():
        assert thread.is_alive(), "the run ended before the victim task started"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_worker_killed_mid_task_is_retried_and_nothing_is_lost_or_done_twice(tmp_path):
    params = {"count": 5, "victim": 2}
    reference = Project.init(tmp_path / "undisturbed")
    undisturbed = reference.run("test.killable", params={"count": 5}, executor="inline")

    project = Project.init(tmp_path / "killed")
    run = project.create_run("test.killable", params=params, executor="local")
    failures: list[BaseException] = []

    def execute() -> None:
        try:
            Project.open(project.root).execute(run.name, executor="local", workers=2)
        except BaseException as error:  # surfaced below
            failures.append(error)

    thread = threading.Thread(target=execute)
    thread.start()
    pid_file = project.root / run.folder / "work" / "task2" / "pid"
    _wait_for(pid_file, thread)
    victim = int(pid_file.read_text())
    assert victim != os.getpid()
    os.kill(victim, signal.SIGKILL)  # the worker process, as `kill -9` would
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive() and not failures
    assert project.get_run(run.name).state == "finished"
    journal = project.catalog.journal(run.id)
    assert {k: j["state"] for k, j in journal.items()} == {f"task{i}": "done" for i in range(5)}
    assert journal["task2"]["attempts"] == 2  # run again once, on a fresh worker
    # tasks queued behind the victim on its worker are submitted again (they had not started);
    # the other worker's tasks go on undisturbed: each task is computed exactly once
    completed = (project.root / run.folder / "work" / "completed.log").read_text().split()
    assert sorted(completed) == [f"task{i}" for i in range(5)]
    assert _names(project, run) == _names(reference, undisturbed)
    assert project.items(run) == reference.items(undisturbed)  # same particles, same values
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "task2: its worker was lost" in log


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs (needs root and mount); unmounted whatever happens."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                             str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_the_task_with_one_clear_line_and_no_half_written_file(
        tmp_path, small_disk):
    project = Project.init(tmp_path / "p")
    run = project.create_run("test.killable", params={"count": 2, "rows": 20000},
                             name="big", executor="inline")
    tables = project.root / run.folder / "outputs" / "tables"
    tables.rmdir() if tables.exists() else None
    tables.symlink_to(small_disk, target_is_directory=True)  # the outputs' disk is full
    project.execute(run, executor="inline")
    journal = project.catalog.journal(run.id)
    assert {j["state"] for j in journal.values()} == {"failed"}
    error = journal["task0"]["error"]
    assert "\n" not in error and "no space left on the disk" in error and "resume" in error
    assert project.get_run("big").state == "failed"
    left = [p.name for p in small_disk.rglob("*") if p.is_file()]
    assert left == [], left  # neither a partial table nor a temporary file
    assert len(project.items(run)) == 0

    tables.unlink()  # space again: resume redoes the failed tasks and gives the full result
    project.execute(run, executor="inline")
    reference = Project.init(tmp_path / "reference")
    undisturbed = reference.run("test.killable", params={"count": 2, "rows": 20000},
                                executor="inline")
    assert project.get_run("big").state == "finished"
    assert project.items(run) == reference.items(undisturbed)
