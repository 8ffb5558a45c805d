"""What a protocol's ``process`` sees of the project while it handles one item."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from tomoweave.engine.errors import ItemError
from tomoweave.store.project_dir import ProjectLayout


class ProcessContext:
    """Paths, logging and external commands for one task. Picklable: it travels to workers."""

    def __init__(self, project_root: str | Path, run_folder: str, task_key: str,
                 inputs: dict[str, Any] | None = None, n_threads: int = 1):
        self.layout = ProjectLayout(project_root)
        self.run_folder = run_folder
        self.task_key = task_key
        self.inputs = inputs or {}
        self.n_threads = n_threads
        self.messages: list[str] = []
        self.commands: list[str] = []

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

    def log(self, message: str) -> None:
        self.messages.append(str(message))

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
