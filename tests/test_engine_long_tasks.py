"""Long tasks: live log and progress on every executor, checkpoints that survive SIGKILL and let
`resume` continue inside the task, and context.map fanning out over the run's executor."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest
from engine_protocols import iteration_update, launcher_command

from tomoweave.api import Project
from tomoweave.engine.checkpoint import read_checkpoint, save_checkpoint
from tomoweave.engine.context import ProcessContext

EXECUTORS = ["inline", "local", "dask"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_log_and_progress_reach_run_log_and_catalog_while_the_task_runs(tmp_path, executor):
    project = Project.init(tmp_path / "project")
    run = project.run("test.live_reports", params={"count": 2}, executor=executor, workers=2)
    journal = project.catalog.journal(run.id)
    assert run.state == "finished", {k: v["error"] for k, v in journal.items()}
    assert all(entry["progress"] == 1.0 for entry in journal.values())
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    for index in range(2):
        assert log.count(f"task{index}: live line of task {index}") == 1  # once, not repeated
        assert f"task{index}: 50% halfway through task {index}" in log
    assert not list((project.root / run.folder / "logs" / "tasks").glob("*.jsonl"))


def test_progress_reports_are_thinned_and_checked(tmp_path):
    context = ProcessContext(tmp_path, "runs/0001-x", "TS_01")
    for step in range(1000):
        context.progress(step / 1000, "one message")
    context.progress(1.0, "one message")
    lines = context.events_path.read_text().splitlines()
    assert 2 <= len(lines) <= 10  # the first, the last, and no more than a few a second
    with pytest.raises(Exception, match="fraction must be finite"):
        context.progress(float("nan"))


def _run_iterate(project: Project, name: str, executor: str, **params) -> float:
    run = project.run("test.iterate", params=params, name=name, executor=executor)
    assert run.state == "finished", project.catalog.journal(run.id)
    return project.items(run)[0].score


def test_checkpoints_go_when_the_task_ends_and_stale_ones_are_ignored(tmp_path):
    project = Project.init(tmp_path / "project")
    run = project.run("test.iterate", params={"iterations": 5, "fail_at": 3}, name="refine",
                      executor="inline")
    assert run.state == "failed"
    checkpoint_path = project.root / run.folder / "work" / "refine" / "checkpoint.npz"
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "computed iteration 2" in log and "iteration 3 fails as asked" in log
    assert not checkpoint_path.exists()  # ended by its own error: nothing to continue from

    # a checkpoint saved under another digest (other parameters) must not be continued from
    save_checkpoint(checkpoint_path, "a digest of other parameters", {"next_iteration": 4},
                    {"total": np.full(8, 1e6)})
    score = _run_iterate(project, "refine", "inline", iterations=5)
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "checkpoint of other parameters or inputs ignored" in log
    assert "continuing from" not in log
    assert score == pytest.approx(float(np.sum(sum(iteration_update(i, 8) for i in range(5)))),
                                  rel=1e-12)
    assert not checkpoint_path.exists()


def test_a_checkpoint_of_other_parameters_is_ignored(tmp_path):
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, "digest-a", {"next_iteration": 4}, {"total": np.ones(3)})
    (state, arrays), reason = read_checkpoint(path, "digest-a")
    assert state == {"next_iteration": 4} and reason == ""
    np.testing.assert_array_equal(arrays["total"], np.ones(3))
    loaded, reason = read_checkpoint(path, "digest-b")
    assert loaded is None and "other parameters" in reason and not path.exists()
    with pytest.raises(Exception, match="not JSON-serialisable"):
        save_checkpoint(path, "digest-a", {"array": np.ones(2)})


def _journal_row(root):
    connection = sqlite3.connect(root / "project.sqlite", timeout=30)
    try:
        return connection.execute(
            "SELECT state, progress, attempts FROM journal WHERE task = 'refine'").fetchone()
    finally:
        connection.close()


@pytest.mark.parametrize("executor", ["local"])
def test_sigkill_mid_task_then_resume_continues_from_the_checkpoint(tmp_path, executor):
    """The scheduler and its worker are killed with SIGKILL while the task iterates; `tomoweave
    resume` continues at the iteration after the last checkpoint, and the result equals an
    undisturbed run's."""
    iterations = 8
    project = Project.init(tmp_path / "project")
    command = launcher_command("run", "test.iterate", "-p", str(project.root), "--name", "refine",
                               "--executor", executor, "--set", f"iterations={iterations}",
                               "--set", "seconds_per_iteration=0.4")
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    progress_at_kill = None
    while time.time() < deadline and process.poll() is None:
        row = _journal_row(project.root) if (project.root / "project.sqlite").exists() else None
        if row and row[1] and 0.3 <= row[1] < 0.7:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            progress_at_kill = row[1]
            break
        time.sleep(0.05)
    assert progress_at_kill is not None, "the kill must land mid-task"
    run_folder = project.root / project.get_run("refine").folder
    log_before = (run_folder / "logs" / "run.log").read_text()
    computed_before = log_before.count("computed iteration")
    assert 2 <= computed_before < iterations

    resumed = subprocess.run(launcher_command("resume", "refine", "-p", str(project.root),
                                              "--executor", executor),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    log = (run_folder / "logs" / "run.log").read_text()
    continued_at = int(log.split("continuing from iteration ")[1].split()[0])
    assert continued_at >= computed_before  # no iteration that was checkpointed runs again
    for iteration in range(continued_at):
        assert log.count(f"computed iteration {iteration}\n") == 1
    for iteration in range(continued_at, iterations):
        assert f"computed iteration {iteration}" in log[len(log_before):]
    assert _journal_row(project.root)[0] == "done"
    assert not (run_folder / "work" / "refine" / "checkpoint.npz").exists()

    undisturbed = Project.init(tmp_path / "undisturbed")
    expected = _run_iterate(undisturbed, "refine", "inline", iterations=iterations)
    assert Project.open(project.root).items("refine")[0].score == expected


@pytest.mark.parametrize("executor", EXECUTORS)
def test_context_map_fans_out_in_order_over_the_executor(tmp_path, executor):
    project = Project.init(tmp_path / "project")
    run = project.run("test.fan_out", params={"count": 6}, executor=executor, workers=2)
    assert run.state == "finished", project.catalog.journal(run.id)
    particles = sorted(project.items(run), key=lambda p: int(p.name.split("_")[0][4:]))
    assert [p.score for p in particles] == [float(i * i) for i in range(6)]
    pids = {p.name.split("_")[1] for p in particles}
    task_pid = {p.name.split("_")[2][4:] for p in particles}
    assert len(task_pid) == 1
    if executor == "inline":
        assert pids == {f"pid{os.getpid()}"}
    elif executor == "local" and (os.cpu_count() or 1) > 1:
        # a pool of this machine's cores, not the task's own process
        assert len(pids) >= 2 and f"pid{task_pid.pop()}" not in pids
    else:  # dask: the cluster's two workers (the task's own too: it secedes while waiting)
        assert len(pids) == 2


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_context_map_names_the_failing_item(tmp_path, executor):
    project = Project.init(tmp_path / "project")
    run = project.run("test.fan_out", params={"count": 4, "fail_item": 2}, executor=executor,
                      workers=2)
    assert run.state == "failed"
    error = project.catalog.journal(run.id)["fan"]["error"]
    assert "context.map: item 2 ((2, 2)) failed: ValueError: item 2 refuses" in error
