"""Streaming re-run on growth (issue 13, item 3): a task over a whole open input (an early
average) runs again each time N new items have arrived, and once more when the input
closes, so its final output covers every item. Waits on observable states, not on time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine_protocols import Summarise  # noqa: F401  (registers test.trickle, test.summarise)

from tomoweave.api import Project

WAIT_SECONDS = 120.0


def _batch(folder: Path, index: int, names: list[str]) -> None:
    temporary = folder / f".batch{index}.tmp"
    temporary.write_text("\n".join(names))
    temporary.replace(folder / f"batch{index}.txt")


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_an_early_summary_runs_again_every_n_new_items_and_when_complete(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    project = Project.init(tmp_path / "project")
    source = project.create_run("test.trickle", params={"folder": str(incoming)},
                                name="source", executor="inline")
    consumer = project.create_run("test.summarise", {"particles": "source"}, {"every_n": 5},
                                  name="summary", executor="inline")
    runs_log = project.root / consumer.folder / "work" / "runs.log"
    counts = lambda: [int(v) for v in runs_log.read_text().split()] if runs_log.exists() \
        else []  # noqa: E731
    source_done = lambda key: project.catalog.journal(source.id).get(key, {}).get(  # noqa: E731
        "state") == "done"

    _batch(incoming, 0, [f"a{i}" for i in range(10)])
    threads = [threading.Thread(target=lambda n=n: Project.open(project.root).execute(
        n, executor="inline")) for n in ("source", "summary")]
    for thread in threads:
        thread.start()
    _wait_until(lambda: counts() == [10], "the first summary of 10")
    _batch(incoming, 1, [f"b{i}" for i in range(3)])  # +3 < 5: no new summary yet
    _wait_until(lambda: source_done("batch1"), "batch1 imported")
    _batch(incoming, 2, [f"c{i}" for i in range(4)])  # +7 since the last summary
    _wait_until(lambda: len(counts()) >= 2, "a second summary")
    _batch(incoming, 3, ["d0", "d1"])
    _wait_until(lambda: source_done("batch3"), "batch3 imported")
    (incoming / "stop").write_text("")
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    history = counts()
    assert history[:2] == [10, 17], history  # 13 (only +3) never made a summary
    assert history[-1] == 19 and len(history) <= 3, history  # and one for the complete input
    assert project.get_run("summary").state == "finished"
    (summary,) = project.items("summary")
    assert summary.score == 19.0  # the output kept is the complete one
    log = (project.root / consumer.folder / "logs" / "run.log").read_text()
    assert "summary: +7 items since its last run (10 -> 17); running it again" in log
