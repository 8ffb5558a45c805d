"""Checkpoints of long tasks: the state a task saves so that a resumed run continues inside it.

One file per task, ``work/<task>/checkpoint.npz``: the arrays, and the JSON state with the
digest of the task (protocol version, parameters, inputs) that saved it. It is written to a
temporary name, flushed to disk and renamed, so a SIGKILL of the worker or of the scheduler at any
moment leaves either the previous checkpoint or the new one, never half of one. A checkpoint of
another digest (the parameters or inputs changed) is ignored and removed.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.engine.errors import TomoweaveError

CHECKPOINT_NAME = "checkpoint.npz"
_STATE_KEY = "__state__"
_ARRAY_PREFIX = "array:"


def save_checkpoint(path: Path, digest: str, state: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write ``state`` (JSON-able) and ``arrays`` atomically to ``path``."""
    if not isinstance(state, dict):
        raise TomoweaveError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    try:
        text = json.dumps({"digest": digest, "state": state})
    except TypeError as error:
        raise TomoweaveError(f"save_checkpoint: state is not JSON-serialisable ({error}); "
                             f"put arrays in the 'arrays' argument") from None
    entries = {_STATE_KEY: np.array(text)}
    for name, array in (arrays or {}).items():
        entries[_ARRAY_PREFIX + str(name)] = np.asarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            np.savez(stream, **entries)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_folder(path.parent)


def read_checkpoint(path: Path, digest: str
                    ) -> tuple[tuple[dict[str, Any], dict[str, np.ndarray]] | None, str]:
    """The checkpoint at ``path`` and a reason when there is none to continue from."""
    if not path.is_file():
        return None, ""
    try:
        with np.load(path, allow_pickle=False) as stored:
            header = json.loads(str(stored[_STATE_KEY]))
            arrays = {name[len(_ARRAY_PREFIX):]: stored[name] for name in stored.files
                      if name.startswith(_ARRAY_PREFIX)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        remove_checkpoint(path)
        return None, f"checkpoint {path.name} unreadable ({error}); starting over"
    if header.get("digest") != digest:
        remove_checkpoint(path)
        return None, "checkpoint of other parameters or inputs ignored; starting over"
    return (header["state"], arrays), ""


def remove_checkpoint(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash of the machine, not only of the process)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
