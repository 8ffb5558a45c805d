"""Live messages and progress of a running task: the worker appends, the scheduler tails.

Each task writes its ``context.log`` lines and ``context.progress`` reports to its own file
``logs/tasks/<task>.jsonl`` (one JSON object per line, flushed at once). The scheduler, the only
writer of ``run.log`` and of the catalog, reads what is new every fraction of a second and passes
it on. A file per task works on every executor, including workers on other hosts of a cluster
that share the project folder, and leaves ``run.log`` with a single writer.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FOLDER = "tasks"
LOG_EVENT = "log"
PROGRESS_EVENT = "progress"
WARNING_PREFIX = "WARNING"  # a log line starting with it is a warning: counted per task
PROGRESS_MIN_INTERVAL_SECONDS = 0.5  # a worker reports progress at most this often (same message)


def events_path(run_dir: Path, safe_key: str) -> Path:
    """The events file of one task in the run folder."""
    return run_dir / "logs" / EVENTS_FOLDER / f"{safe_key}.jsonl"


class EventWriter:
    """Worker side: append log and progress events of one task."""

    def __init__(self, path: Path):
        self.path = path
        self._last_progress: tuple[float, str] | None = None
        self._last_progress_time = 0.0

    def log(self, message: str) -> None:
        self._append({"kind": LOG_EVENT, "message": message})

    def progress(self, fraction: float, message: str) -> bool:
        """Record progress; False when it was dropped (too soon after the last, same message)."""
        now = time.monotonic()
        previous = self._last_progress
        if (previous is not None and previous[1] == message and fraction < 1.0
                and now - self._last_progress_time < PROGRESS_MIN_INTERVAL_SECONDS):
            return False
        self._last_progress, self._last_progress_time = (fraction, message), now
        self._append({"kind": PROGRESS_EVENT, "fraction": fraction, "message": message})
        return True

    def _append(self, event: dict[str, Any]) -> None:
        event["time"] = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(event) + "\n"
        # one write() per event, opened for appending; the reader keeps a torn last line for later
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line)


@dataclass
class TaskEvents:
    """Scheduler side: what is new in one task's events file since the last read."""

    path: Path
    offset: int = 0
    fraction: float = 0.0
    message: str = ""
    _partial: str = field(default="", repr=False)

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self.offset)
                chunk = stream.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a killed worker: nothing to show
        for event in events:
            if event.get("kind") == PROGRESS_EVENT:
                self.fraction = float(event.get("fraction", 0.0))
                self.message = str(event.get("message", ""))
        return events

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


PROGRESS_LOG_STEP = 0.1  # run.log gets a progress line per 10 % (or when the message changes)


class EventRelay:
    """Scheduler side: pass the new events of every running task on to the run log, the
    catalog's journal (for the web GUI and `show`) and the terminal progress bar."""

    def __init__(self, run_id: int, log, catalog, progress=None):
        self.run_id, self.log, self.catalog, self.progress = run_id, log, catalog, progress
        self.tasks: dict[str, TaskEvents] = {}
        self._logged: dict[str, tuple[float, str]] = {}

    def watch(self, key: str, path: Path) -> None:
        """Start following a task (its file from an earlier attempt is removed first)."""
        events = TaskEvents(path)
        events.remove()
        self.tasks[key] = events

    def drain(self, key: str | None = None) -> None:
        """Pass on what is new for ``key`` (every watched task when None)."""
        for task_key in [key] if key is not None else list(self.tasks):
            events = self.tasks.get(task_key)
            if events is None:
                continue
            moved, warnings = False, 0
            for event in events.read_new():
                if event.get("kind") == LOG_EVENT:
                    message = str(event.get("message", ""))
                    warnings += is_warning(message)
                    self.log.write(with_key(task_key, message))
                elif event.get("kind") == PROGRESS_EVENT:
                    moved = True
            if moved:
                self._pass_progress(task_key, events)
            if warnings:
                self.catalog.add_task_warnings(self.run_id, task_key, warnings)

    def finish(self, key: str) -> None:
        """Last read of a task that ended; its events file goes."""
        self.drain(key)
        events = self.tasks.pop(key, None)
        self._logged.pop(key, None)
        if events is not None:
            events.remove()
        if self.progress is not None and hasattr(self.progress, "task_progress"):
            self.progress.task_progress(key, None, "")

    def _pass_progress(self, key: str, events: TaskEvents) -> None:
        self.catalog.update_task_progress(self.run_id, key, events.fraction, events.message)
        if self.progress is not None and hasattr(self.progress, "task_progress"):
            self.progress.task_progress(key, events.fraction, events.message)
        logged_fraction, logged_message = self._logged.get(key, (-1.0, ""))
        if (events.message != logged_message
                or events.fraction >= logged_fraction + PROGRESS_LOG_STEP
                or (events.fraction >= 1.0 > logged_fraction)):
            self._logged[key] = (events.fraction, events.message)
            text = f" {events.message}" if events.message else ""
            self.log.write(f"{key}: {events.fraction:.0%}{text}")


def is_warning(message: str) -> bool:
    """Whether a log line is a warning (``context.warn``, or a line starting WARNING)."""
    return message.lstrip().upper().startswith(WARNING_PREFIX)


def with_key(key: str, message: str) -> str:
    """``message`` prefixed by the task key once (not when it already starts with it)."""
    return message if message.startswith(f"{key}:") else f"{key}: {message}"
