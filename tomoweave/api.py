"""The Python API: the same operations as the CLI, for scripts and notebooks.

>>> project = Project.init("myproject")
>>> sim = project.run("simulate", params={"preset": "tiny"})
>>> binned = project.run("tiltseries.bin", inputs={"tilt_series": sim.name}, params={"binning": 2})
>>> project.items(binned)

The ``local`` executor starts worker processes (forkserver), which import the calling script
again: put a script's code under ``if __name__ == "__main__":`` (notebooks need nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tomoweave.engine.errors import InputError, TomoweaveError
from tomoweave.engine.executors import make_executor
from tomoweave.engine.inputs import (
    find_run,
    inputs_open,
    load_input_items,
    resolve_inputs,
    split_reference,
)
from tomoweave.engine.registry import get_protocol
from tomoweave.engine.runner import RunScheduler
from tomoweave.model import ParticleTable
from tomoweave.model.sets import RunState
from tomoweave.store.catalog import Catalog, RunRecord
from tomoweave.store.particle_tables import is_columnar, read_set, tomogram_particles
from tomoweave.store.project_dir import ProjectLayout


class Run:
    """A run as seen from the API; ``state`` is read fresh from the catalog."""

    def __init__(self, project: Project, record: RunRecord):
        self.project = project
        self.id = record.id
        self.name = record.name
        self.protocol = record.protocol
        self.folder = record.folder

    @property
    def record(self) -> RunRecord:
        return self.project.catalog.run(self.id)

    @property
    def state(self) -> str:
        record = self.record
        if record.state == RunState.RUNNING and record.pid and not _pid_alive(record.pid):
            return RunState.INTERRUPTED
        return record.state

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    def __repr__(self) -> str:
        return f"Run({self.id}, {self.name!r}, {self.protocol}, {self.state})"


class Project:
    """A project folder with its catalog."""

    def __init__(self, root: str | Path):
        self.layout = ProjectLayout(root)
        if not self.layout.catalog_path.exists():
            raise TomoweaveError(f"{self.layout.root}: not a tomoweave project "
                                 f"(no project.sqlite; create one with `tomoweave init`)")
        self.catalog = Catalog(self.layout.catalog_path)

    @classmethod
    def init(cls, root: str | Path) -> Project:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        Catalog(root / "project.sqlite").close()
        (root / "runs").mkdir(exist_ok=True)
        return cls(root)

    @classmethod
    def open(cls, root: str | Path) -> Project:
        return cls(root)

    @property
    def root(self) -> Path:
        return self.layout.root

    def path(self, stored_path: str) -> Path:
        """Absolute path of a path stored in an item."""
        return self.layout.resolve(stored_path)

    # running ----------------------------------------------------------------------------
    def create_run(self, protocol: str, inputs: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None, name: str | None = None,
                   executor: str = "local") -> Run:
        """Validate and record a run (or update an existing run of that name for a resume)."""
        protocol_class = get_protocol(protocol, project_root=self.root)
        validated = validate_params(protocol_class, params or {})
        set_ids = resolve_inputs(self.catalog, protocol_class, inputs or {})
        loaded, _ = load_input_items(self.catalog, protocol_class, set_ids)
        try:  # bad input fails here, before anything is written
            protocol_class().plan(validated, loaded)
        except InputError:
            if not inputs_open(self.catalog, set_ids):  # still growing: it may become enough
                raise
        stored_inputs = {"references": inputs or {}, "set_ids": set_ids}
        plain_params = validated.model_dump(mode="json")
        existing = self.catalog.run_by_name(name) if name else None
        if existing is not None:
            if existing.protocol != protocol:
                raise InputError(f"run '{name}' exists and runs {existing.protocol}, not {protocol}")
            self.catalog.update_run(existing.id, params=plain_params, inputs=stored_inputs,
                                    executor=executor, state=RunState.QUEUED)
            return Run(self, self.catalog.run(existing.id))
        record = self.catalog.add_run(name or self._free_name(protocol), protocol, plain_params,
                                      stored_inputs, executor,
                                      lambda run_id: self.layout.run_folder(run_id, protocol))
        self.layout.make_run_folders(record.folder)
        for output_name, spec in protocol_class.outputs.items():  # open: items may still come
            self.catalog.ensure_set(record.id, output_name, spec.item_type.__name__)
        return Run(self, record)

    def run(self, protocol: str, inputs: dict[str, Any] | None = None,
            params: dict[str, Any] | None = None, name: str | None = None,
            executor: str = "local", workers: int | None = None, progress=None) -> Run:
        """Create (or resume, when ``name`` exists) a run and execute it until it ends."""
        run = self.create_run(protocol, inputs, params, name, executor)
        return self.execute(run, executor, workers, progress)

    def execute(self, run: Run | str, executor: str = "local", workers: int | None = None,
                progress=None) -> Run:
        run = run if isinstance(run, Run) else self.get_run(run)
        scheduler = RunScheduler(self.layout, self.catalog, run.id,
                                 make_executor(executor, workers, project_root=self.root), progress)
        scheduler.execute()
        return run

    def launch(self, run: Run, executor: str = "local") -> subprocess.Popen:
        """Execute a recorded run in a separate process (what the web GUI does)."""
        command = [sys.executable, "-m", "tomoweave.cli", "resume", str(run.id),
                   "-p", str(self.root), "--executor", executor]
        log = open(self.root / run.folder / "logs" / "scheduler.out", "a")
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def _free_name(self, protocol: str) -> str:
        names = {r.name for r in self.catalog.runs()}
        if protocol not in names:
            return protocol
        index = 2
        while f"{protocol}-{index}" in names:
            index += 1
        return f"{protocol}-{index}"

    # reading ----------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        return [Run(self, record) for record in self.catalog.runs()]

    def get_run(self, reference: str | int) -> Run:
        return Run(self, find_run(self.catalog, str(reference)))

    def items(self, run: Run | str, output: str | None = None) -> list[BaseModel] | ParticleTable:
        """Model objects of a run's output (its only output when ``output`` is None); particles
        come as a ParticleTable: a sequence of Particle with columns as arrays."""
        return read_set(self.catalog, self.output_set(run, output))

    def particles(self, run: Run | str, output: str | None = None, *,
                  tomogram: str | None = None) -> ParticleTable:
        """The particles of a run's output as columns (``positions_a``, ``rotations``,
        ``scores``…), all of them or those of one ``tomogram`` (only its tables are read)."""
        output_set = self.output_set(run, output)
        if not is_columnar(output_set.item_type):
            raise InputError(f"output '{output_set.output}' holds {output_set.item_type} "
                             "items, not particles")
        if tomogram is not None:
            return tomogram_particles(self.catalog, output_set.id, tomogram)
        return read_set(self.catalog, output_set)

    def output_set(self, run: Run | str, output: str | None = None):
        if isinstance(run, Run):
            run_record, output_name = run.record, output
        else:
            run_record, output_name = split_reference(self.catalog, run)
            output_name = output or output_name
        sets = self.catalog.sets_of_run(run_record.id)
        if output_name is None:
            if len(sets) != 1:
                names = ", ".join(s.output for s in sets) or "none"
                raise InputError(f"run '{run_record.name}' has outputs {names}: name one")
            return sets[0]
        for candidate in sets:
            if candidate.output == output_name:
                return candidate
        raise InputError(f"run '{run_record.name}' has no output '{output_name}'")


def validate_params(protocol_class, params: dict[str, Any]) -> BaseModel:
    """Parameters validated against the protocol's declaration; errors name the field."""
    unknown = set(params) - set(protocol_class.Params.model_fields)
    if unknown:
        known = ", ".join(protocol_class.Params.model_fields) or "none"
        raise InputError(f"{protocol_class.name} has no parameter '{sorted(unknown)[0]}' "
                         f"(its parameters: {known})")
    try:
        return protocol_class.Params(**_single_values_as_lists(protocol_class, params))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "parameters"
        raise InputError(f"{protocol_class.name}: parameter '{field}': {first['msg']}"
                         f" (got {first.get('input')!r})") from None


def _single_values_as_lists(protocol_class, params: dict[str, Any]) -> dict[str, Any]:
    """``files: a.xf`` (``--set files=a.xf``, a YAML scalar) for a list parameter is ``[a.xf]``."""
    fields = protocol_class.Params.model_fields
    coerced = dict(params)
    for name, value in params.items():
        annotation = typing.get_origin(fields[name].annotation)
        arguments = typing.get_args(fields[name].annotation)
        is_list = annotation is list or (
            annotation in (types.UnionType, typing.Union)
            and any(typing.get_origin(a) is list for a in arguments))
        if is_list and isinstance(value, str | int | float) and not isinstance(value, bool):
            coerced[name] = [value]
    return coerced


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
