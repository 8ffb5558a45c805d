"""Plain-data views of a project for `status`, `show`, the report and the web GUI."""

from __future__ import annotations

from typing import Any

from tomoweave.api import Project, Run
from tomoweave.engine.errors import InputError
from tomoweave.engine.inputs import split_reference
from tomoweave.model.sets import RunState, SetState, TaskState
from tomoweave.store.particle_tables import set_page

ACTIVE_RUN_STATES = (RunState.QUEUED, RunState.RUNNING)
STOPPED = "stopped"  # a task or output whose run ended before it did (stopped, killed)


def task_state_shown(run_state: str, task_state: str) -> str:
    """A task's state as it stands: one recorded running in a run that no longer runs was
    stopped with it (the journal keeps 'running' so that resume retries it)."""
    if task_state == TaskState.RUNNING and run_state not in ACTIVE_RUN_STATES:
        return STOPPED
    return task_state


def set_state_shown(run_state: str, set_state: str) -> str:
    """An output set's state as it stands: open (still growing) only while its run is active."""
    if set_state == SetState.OPEN and run_state not in ACTIVE_RUN_STATES:
        return STOPPED
    return set_state


def run_summary(project: Project, run: Run) -> dict[str, Any]:
    record = run.record
    state = run.state
    journal = project.catalog.journal(run.id)
    outputs = {s.output: {"type": s.item_type, "state": set_state_shown(state, s.state),
                          "count": project.catalog.count_items(s.id)}
               for s in project.catalog.sets_of_run(run.id)}
    return {
        "id": run.id,
        "name": run.name,
        "protocol": run.protocol,
        "state": state,
        "folder": run.folder,
        "created": record.created,
        "started": record.started,
        "finished": record.finished,
        "items_done": sum(1 for j in journal.values() if j["state"] == TaskState.DONE),
        "items_failed": sum(1 for j in journal.values() if j["state"] == TaskState.FAILED),
        "warnings": sum(j.get("warnings") or 0 for j in journal.values()),
        "items_warned": sum(1 for j in journal.values() if j.get("warnings")),
        "running": {t: {"progress": j.get("progress") or 0.0, "message": j.get("message") or ""}
                    for t, j in journal.items()
                    if task_state_shown(state, j["state"]) == TaskState.RUNNING},
        "inputs": record.inputs.get("references", {}),
        "outputs": outputs,
    }


def status(project: Project) -> list[dict[str, Any]]:
    """Runs in creation order with name, protocol and state."""
    return [run_summary(project, run) for run in project.runs()]


def show(project: Project, reference: str, *, offset: int = 0,
         limit: int | None = None) -> dict[str, Any]:
    """A run (with all its outputs) or one output ("RUN.OUTPUT"), with the fields of items
    ``offset`` … ``offset + limit`` of each output (all when ``limit`` is None); ``count`` is
    the size of the whole set. Particle tables are paged without building particle objects."""
    if offset < 0 or (limit is not None and limit < 0):
        raise InputError(f"show: offset and limit must be >= 0, got {offset} and {limit}")
    run_record, output = split_reference(project.catalog, reference)
    run = project.get_run(str(run_record.id))
    record = run.record
    details = run_summary(project, run)
    details.update(params=record.params, provenance=record.provenance, error=record.error,
                   journal=[{"task": t, "state": task_state_shown(details["state"], j["state"]),
                             "error": j["error"],
                             "attempts": j["attempts"], "warnings": j.get("warnings") or 0,
                             "progress": j.get("progress"),
                             "message": j.get("message")}
                            for t, j in project.catalog.journal(run.id).items()])
    sets = project.catalog.sets_of_run(run.id)
    if output is not None:
        sets = [project.output_set(run, output)]
    rendered = {}
    for output_set in sets:
        items = set_page(project.catalog, output_set, offset, limit) if limit != 0 else []
        rendered[output_set.output] = {"type": output_set.item_type,
                                       "state": set_state_shown(details["state"],
                                                                output_set.state),
                                       "count": project.catalog.count_items(output_set.id),
                                       "offset": offset, "items": items}
    if output is not None:
        only = rendered[sets[0].output]
        return {"run": details, "output": sets[0].output, **only}
    return {"run": details, "outputs": rendered}
