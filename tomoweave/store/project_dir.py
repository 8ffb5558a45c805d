"""Folder layout of a project and atomic writes.

```
myproject/
  project.sqlite            catalog (WAL)
  runs/0007-ctf.estimate/
      outputs/  work/  logs/run.log
```
Paths stored in the catalog are relative to the project folder, so a project can be moved.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CATALOG_NAME = "project.sqlite"
RUNS_FOLDER = "runs"


class ProjectLayout:
    """Where things live inside one project folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_NAME

    def run_folder(self, run_id: int, protocol_name: str) -> str:
        """Project-relative folder of a run, e.g. ``runs/0007-ctf.estimate``."""
        return f"{RUNS_FOLDER}/{run_id:04d}-{protocol_name}"

    def make_run_folders(self, relative_folder: str) -> Path:
        folder = self.root / relative_folder
        for sub in ("outputs", "work", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return folder

    def relative(self, path: str | Path) -> str:
        """Project-relative POSIX path of ``path`` when it is inside the project, else absolute."""
        path = Path(path)
        absolute = path if path.is_absolute() else (Path.cwd() / path)
        absolute = Path(os.path.normpath(absolute))
        try:
            return absolute.relative_to(self.root).as_posix()
        except ValueError:
            return absolute.as_posix()

    def resolve(self, stored_path: str | Path) -> Path:
        """Absolute path of a path stored in the catalog."""
        path = Path(stored_path)
        return path if path.is_absolute() else self.root / path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
