"""What a protocol's ``process`` sees of the project while it handles one item."""

from __future__ import annotations

import math
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.engine import checkpoint
from tomoweave.engine.errors import ItemError, TomoweaveError
from tomoweave.engine.fanout import INLINE, FanOut
from tomoweave.engine.task_events import WARNING_PREFIX, EventWriter, events_path
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
        self.commands: list[dict[str, Any]] = []  # what run_command ran, for the provenance
        self.owner_pid, self.owner_host = os.getpid(), socket.gethostname()  # the scheduler
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

    def warn(self, message: str) -> None:
        """A warning for the run log: the item still counts as done, but the run's badge, its
        page and the graph show how many warnings each item and the run had."""
        self.log(f"{WARNING_PREFIX} {message}")

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

    def owner_pids(self) -> list[int]:
        """Processes whose end cancels this task's external programs: the run's scheduler,
        when it runs on this host."""
        return [self.owner_pid] if socket.gethostname() == self.owner_host else []

    @property
    def cancel_path(self) -> Path:
        """A file whose appearance cancels the run's external programs (on any host)."""
        return self.run_dir / "logs" / "cancel"

    def run_command(self, args: Sequence[str | Path], cwd: str | Path | None = None,
                    env: dict[str, str] | None = None, *, program=None,
                    timeout_s: float | None = None) -> subprocess.CompletedProcess:
        """Run an external program and wait for it to end.

        Parameters
        ----------
        args : sequence of str or Path
            The command line. A bare name of one of ``program``'s executables is replaced by
            its located path (environment variable, ``programs.toml``, then PATH).
        cwd, env : optional
            Working folder; environment variables added to this process's environment.
        program : Program or sequence of Program, optional
            The programs the command runs (e.g. ``mpirun`` and ``relion_refine_mpi``): their
            paths and versions go to the run's provenance with the command line.
        timeout_s : float, optional
            Kill the program (and everything it started) after this many seconds.

        Its output reaches the run log line by line while it runs. A non-zero exit or a
        timeout raises ``ItemError`` with the last lines of the output; if the task is
        interrupted, or the worker or the run's scheduler dies, the program's whole process
        group is killed. Returns the finished process, its merged output in ``stdout``.
        """
        from tomoweave.engine.commands import run_program

        return run_program(self, args, program=program, cwd=cwd, env=env, timeout_s=timeout_s)


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) or "task"
