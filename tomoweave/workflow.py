"""Workflows: a YAML list of runs (protocol, parameters, inputs by run name), replayable on new data.

```yaml
runs:
  - name: simulate
    protocol: simulate
    params: {preset: test}
  - name: bin2
    protocol: tiltseries.bin
    inputs: {tilt_series: simulate}
    params: {binning: 2}
```

``${TOMOWEAVE_PROJECT}`` in a parameter is the project folder; other ``${NAME}`` are taken from
the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tomoweave.api import Project, Run
from tomoweave.engine.errors import InputError, TomoweaveError
from tomoweave.engine.registry import get_protocol
from tomoweave.model.sets import RunState


def load_workflow(path: str | Path, variables: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The runs of a workflow file in dependency order; ``${NAME}`` in string parameters is
    replaced by ``variables[NAME]`` or the environment variable NAME."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"{path}: cannot read workflow ({error})") from None
    runs = (document or {}).get("runs") if isinstance(document, dict) else None
    if not isinstance(runs, list) or not runs:
        raise InputError(f"{path}: expected a 'runs:' list of {{name, protocol, params, inputs}}")
    for index, entry in enumerate(runs):
        if not isinstance(entry, dict) or "protocol" not in entry:
            raise InputError(f"{path}: run #{index + 1}: 'protocol' missing")
        entry.setdefault("name", entry["protocol"])
        entry["params"] = _expand_variables(entry.get("params") or {}, variables or {})
        entry.setdefault("inputs", {})
    return ordered_by_dependencies(runs, path)


def _expand_variables(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in variables.items():
            value = value.replace("${" + name + "}", replacement)
        return os.path.expandvars(value)
    if isinstance(value, list):
        return [_expand_variables(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _expand_variables(v, variables) for k, v in value.items()}
    return value


def ordered_by_dependencies(runs: list[dict[str, Any]], source: Path | str) -> list[dict[str, Any]]:
    """Runs sorted so every run comes after the runs it takes inputs from."""
    by_name = {entry["name"]: entry for entry in runs}
    ordered: list[dict[str, Any]] = []
    visiting: set[str] = set()

    def visit(entry: dict[str, Any]) -> None:
        if entry in ordered:
            return
        if entry["name"] in visiting:
            raise InputError(f"{source}: run '{entry['name']}' depends on itself")
        visiting.add(entry["name"])
        for reference in _references(entry):
            for candidate in (reference, reference.rsplit(".", 1)[0]):
                if candidate in by_name and candidate != entry["name"]:
                    visit(by_name[candidate])
                    break
        visiting.discard(entry["name"])
        ordered.append(entry)

    for entry in runs:
        visit(entry)
    return ordered


def _references(entry: dict[str, Any]) -> list[str]:
    references: list[str] = []
    for value in entry["inputs"].values():
        references.extend(value if isinstance(value, list) else [value])
    return [str(r) for r in references]


def check_protocols(project: Project, entries: list[dict[str, Any]], path: str | Path) -> None:
    """Fail before any run starts when a run names an unknown protocol or one whose external
    program is not installed here (one line: which run, what is missing, how to install it)."""
    for entry in entries:
        try:
            get_protocol(entry["protocol"], project_root=project.root)
        except TomoweaveError as error:
            raise InputError(f"{path}: run '{entry['name']}': {error}") from None


def run_workflow(project: Project, path: str | Path, executor: str = "local",
                 workers: int | None = None, progress_factory=None, on_run_end=None) -> list[Run]:
    """Run (or resume) every run of the workflow in dependency order; ``on_run_end(run)`` is
    called as each run ends."""
    finished = []
    entries = load_workflow(path, {"TOMOWEAVE_PROJECT": str(project.root)})
    check_protocols(project, entries, path)
    for entry in entries:
        progress = progress_factory(entry["name"]) if progress_factory else None
        run = project.create_run(entry["protocol"], entry["inputs"], entry["params"],
                                 entry["name"], executor)
        if progress is not None:
            with progress:
                project.execute(run, executor, workers, progress)
        else:
            project.execute(run, executor, workers)
        finished.append(run)
        if on_run_end is not None:
            on_run_end(run)
        if run.state == RunState.FAILED:
            reason = run.record.error or "see its log"
            raise InputError(f"workflow stopped: run '{run.name}' failed ({reason})")
    return finished


def stream_workflow(project: Project, path: str | Path, executor: str = "local",
                    workers: int | None = None) -> list[Run]:
    """Start every run of the workflow at once, each in its own scheduler thread.

    Downstream runs wait on their open inputs and process items as they arrive, so a workflow
    that starts with ``import.mdoc`` in watch mode processes tilt series during collection.
    """
    import threading

    entries = load_workflow(path, {"TOMOWEAVE_PROJECT": str(project.root)})
    check_protocols(project, entries, path)
    runs = [project.create_run(e["protocol"], e["inputs"], e["params"], e["name"], executor)
            for e in entries]
    errors: list[BaseException] = []

    def execute(name: str) -> None:
        try:
            Project.open(project.root).execute(name, executor, workers)
        except BaseException as error:  # reported after every thread ended
            errors.append(error)

    threads = [threading.Thread(target=execute, args=(run.name,), name=run.name) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise InputError(f"workflow stopped: {errors[0]}")
    return runs


def export_workflow(project: Project) -> str:
    """The YAML that reproduces the project's runs."""
    runs = []
    for run in project.runs():
        record = run.record
        runs.append({"name": record.name, "protocol": record.protocol,
                     "inputs": record.inputs.get("references", {}), "params": record.params})
    return yaml.safe_dump({"runs": runs}, sort_keys=False)
