"""What a protocol's ``process`` sees of the project while it handles one item."""

from __future__ import annotations

import math
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.engine import checkpoint
from tomoweave.engine.errors import ItemError, TomoweaveError
from tomoweave.engine.fanout import INLINE, FanOut
from tomoweave.engine.task_events import EventWriter, events_path
from tomoweave.store.project_dir import ProjectLayout


class ProcessContext:
    """Paths, live logging and progress, checkpoints, fan-out and external commands for one
    task. Picklable: it travels to workers (the fan-out pool and the listener stay behind)."""

    def __init__(self, project_root: str | Path, run_folder: str, task_key: str,
                 inputs: dict[str, Any] | None = None, n_threads: int = 1, *,
                 digest: str = "", executor_kind: str = INLINE):
        self.layout = ProjectLayout(project_root)
        self.run_folder = run_folder
        self.task_key = task_key
        self.inputs = inputs or {}
        self.n_threads = n_threads
        self.digest = digest
        self.executor_kind = executor_kind
        self.messages: list[str] = []
        self.commands: list[str] = []
        self.listener: Callable[[], None] | None = None  # inline: the scheduler reads at once
        self._events: EventWriter | None = None
        self._fanout: FanOut | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(listener=None, _events=None, _fanout=None)
        return state

    @property
    def project_root(self) -> Path:
        return self.layout.root

    @property
    def run_dir(self) -> Path:
        return self.layout.root / self.run_folder

    @property
    def work_dir(self) -> Path:
        folder = self.run_dir / "work" / _safe(self.task_key)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def output_path(self, filename: str) -> Path:
        """Absolute path of ``filename`` in the run's outputs folder (parents created)."""
        path = self.run_dir / "outputs" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: str | Path) -> str:
        """The project-relative form of ``path``, to store in items."""
        return self.layout.relative(path)

    def resolve(self, stored_path: str | Path | None) -> Path:
        """Absolute path of a path stored in an item."""
        if stored_path is None:
            raise ItemError(f"{self.task_key}: a required file path is missing from the item")
        return self.layout.resolve(stored_path)

    # live reports -----------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        """The task's events file, which the scheduler tails into run.log and the catalog."""
        return events_path(self.run_dir, _safe(self.task_key))

    def log(self, message: str) -> None:
        """A line for the run log, shown while the task runs (on every executor)."""
        self.messages.append(str(message))
        self._writer().log(str(message))
        self._notify()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the task is (0 to 1) and what it is doing: shown live in the terminal,
        the run log and the web GUI. Cheap to call often: reports are thinned to a few a second."""
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            raise TomoweaveError(f"context.progress: fraction must be a number, got {fraction!r}") \
                from None
        if not math.isfinite(value):
            raise TomoweaveError(f"context.progress: fraction must be finite, got {fraction!r}")
        if self._writer().progress(min(1.0, max(0.0, value)), str(message)):
            self._notify()

    def _writer(self) -> EventWriter:
        if self._events is None:
            self._events = EventWriter(self.events_path)
        return self._events

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener()

    # checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "work" / _safe(self.task_key) / checkpoint.CHECKPOINT_NAME

    def save_checkpoint(self, state: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Save the task's state (JSON-able dict) and arrays atomically: after a SIGKILL of the
        worker or the scheduler, `tomoweave resume` runs the task again and ``load_checkpoint``
        returns them. Removed once the task has finished."""
        checkpoint.save_checkpoint(self.checkpoint_path, self.digest, state, arrays)

    def load_checkpoint(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        """(state, arrays) saved by an earlier attempt of this task with the same digest (same
        protocol version, parameters and inputs), else None."""
        loaded, reason = checkpoint.read_checkpoint(self.checkpoint_path, self.digest)
        if reason:
            self.log(reason)
        return loaded

    # fan-out ----------------------------------------------------------------------------
    def map(self, function: Callable[[Any], Any], items: list) -> list:
        """``[function(item) for item in items]`` spread over the run's executor (inline: a
        loop; local: this machine's cores; dask: the cluster's workers). ``function`` must be
        a picklable module-level function; results come back in order; the first failing item
        fails the task with an error naming it."""
        if self._fanout is None:
            self._fanout = FanOut(self.executor_kind)
        return self._fanout.map(function, items)

    def close(self) -> None:
        """End what the task started (the fan-out pool); the engine calls it after process."""
        if self._fanout is not None:
            self._fanout.close()
            self._fanout = None

    def run_command(self, args: list[str], cwd: str | Path | None = None,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run an external program, recording its full command line and output in the log."""
        command_line = shlex.join(str(a) for a in args)
        self.commands.append(command_line)
        self.log(f"$ {command_line}")
        try:
            completed = subprocess.run(
                [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                env={**os.environ, **(env or {})})
        except FileNotFoundError as error:
            raise ItemError(f"program not found: {args[0]}") from error
        for stream in (completed.stdout, completed.stderr):
            if stream.strip():
                self.log(stream.strip()[-4000:])
        if completed.returncode != 0:
            raise ItemError(f"{Path(str(args[0])).name} exited with code {completed.returncode}")
        return completed


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) or "task"
