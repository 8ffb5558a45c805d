"""Runs: create and launch (in a separate scheduler process), stop, resume, details, log tail,
items, and manual picks saved through a ``pick.manual`` run."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from tomoweave.engine.errors import TomoweaveError
from tomoweave.engine.executors import EXECUTOR_NAMES
from tomoweave.inspect_project import run_summary, task_state_shown
from tomoweave.store.particle_tables import is_columnar, particle_page
from tomoweave.web.routes_project import access_of

router = APIRouter(prefix="/api")
PICK_PROTOCOL = "pick.manual"
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
LOG_TAIL_BYTES = 64_000
MAX_LISTED_ITEMS = 2000
MAX_PICTURES = 24
STOP_WAIT_SECONDS = 5.0
_pick_lock = threading.Lock()


class RunRequest(BaseModel):
    protocol: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    executor: str = "local"
    launch: bool = True


class PickRequest(BaseModel):
    tomograms: str = Field(description="reference of the tomogram set, RUN.OUTPUT")
    tomogram: str = Field(description="name of the tomogram the picks belong to")
    picks_a: list[tuple[float, float, float]]
    run: str | None = Field(None, description="pick.manual run to update (default: a new one)")


def field_error(field: str | None, message: str, status: int = 422) -> HTTPException:
    """An error the form can show beside the named field."""
    return HTTPException(status, {"message": message,
                                  "errors": [{"field": field, "message": message}]})


def validate_run_request(body: RunRequest, known: dict[str, type]) -> type:
    """Check protocol, name, executor and parameters; 422 naming the first bad field."""
    if body.protocol not in known:
        raise field_error("protocol", f"unknown protocol '{body.protocol}'")
    protocol_class = known[body.protocol]
    if body.name is not None and not RUN_NAME_PATTERN.match(body.name):
        raise field_error("name", "run names use letters, digits and . _ + - (up to 100)")
    if body.executor not in EXECUTOR_NAMES:
        raise field_error("executor", f"executor must be one of {', '.join(EXECUTOR_NAMES)}")
    fields = protocol_class.Params.model_fields
    for key in body.params:
        if key not in fields:
            raise field_error(f"params.{key}", f"{body.protocol} has no parameter '{key}'")
    try:
        protocol_class.Params(**body.params)
    except ValidationError as error:
        errors = [{"field": "params." + ".".join(str(p) for p in e["loc"]),
                   "message": e["msg"]} for e in error.errors()]
        raise HTTPException(422, {"message": f"{errors[0]['field']}: {errors[0]['message']}",
                                  "errors": errors}) from None
    for input_name, spec in protocol_class.inputs.items():
        if not spec.optional and body.inputs.get(input_name) in (None, "", []):
            raise field_error(f"inputs.{input_name}", f"input '{input_name}': choose an output "
                              f"holding {spec.item_type.__name__} items")
    return protocol_class


def _input_field(message: str, protocol_class, given: dict[str, Any]) -> str | None:
    """The input an engine error is about: named in it, or whose reference it quotes."""
    for name in protocol_class.inputs:
        if f"'{name}'" in message or (given.get(name) and f"'{given[name]}'" in message):
            return f"inputs.{name}"
    return None


def _create(access, body: RunRequest):
    protocol_class = validate_run_request(body, access.protocols())
    project = access.project()
    if body.name:
        existing = project.catalog.run_by_name(body.name)
        if existing is not None and existing.protocol != body.protocol:
            raise field_error("name", f"run '{body.name}' exists and runs {existing.protocol}; "
                              f"choose another name")
        if existing is not None and project.get_run(body.name).state == "running":
            raise field_error("name", f"run '{body.name}' is running; stop it first", 409)
    try:
        return project.create_run(body.protocol, body.inputs, body.params, body.name,
                                  body.executor)
    except TomoweaveError as error:
        field, message = _input_field(str(error), protocol_class, body.inputs), str(error)
        if field and f"'{field[7:]}'" not in message:
            message = f"input '{field[7:]}': {message}"
        raise field_error(field, message) from None


@router.post("/runs")
def create_run(request: Request, body: RunRequest) -> dict[str, Any]:
    """Record a run (or update the named one: a re-run with changed parameters) and launch it."""
    access = access_of(request)
    run = _create(access, body)
    if body.launch:
        access.adopt(access.project().launch(run, body.executor))
    return run_summary(access.project(), run)


@router.get("/runs/{run_id}")
def run_details(request: Request, run_id: int) -> dict[str, Any]:
    project = access_of(request).project()
    run = _get_run(project, run_id)
    record = run.record
    details = run_summary(project, run)
    names = {r.id: r.name for r in project.catalog.runs()}
    set_runs, set_references = {}, {}
    for set_ids in record.inputs.get("set_ids", {}).values():
        for set_id in set_ids:
            try:
                found = project.catalog.set_by_id(set_id)
            except KeyError:
                continue
            set_runs[set_id] = found.run_id
            set_references[set_id] = f"{names.get(found.run_id)}.{found.output}"
    details.update(
        params=record.params, provenance=record.provenance, error=record.error,
        executor=record.executor, pid=record.pid,
        input_runs={name: [{"run_id": set_runs.get(i), "run": names.get(set_runs.get(i))}
                           for i in ids]
                    for name, ids in record.inputs.get("set_ids", {}).items()},
        # RUN.OUTPUT of each set read, whatever form the run was given (the CLI stores "RUN")
        input_references={name: [set_references[i] for i in ids if i in set_references]
                          for name, ids in record.inputs.get("set_ids", {}).items()},
        journal=[{"task": t, "state": task_state_shown(details["state"], j["state"]),
                  "error": j["error"], "attempts": j["attempts"], "warnings": j.get("warnings") or 0,
                  "progress": j.get("progress"), "message": j.get("message"),
                  "seconds": (j["finished"] - j["started"]) if j["finished"] and j["started"]
                  else None}
                 for t, j in project.catalog.journal(run.id).items()],
        protocol_info=_describe_or_none(access_of(request).protocols(), run.protocol),
        pictures=_pictures(project.root, run.folder))
    for output_set in project.catalog.sets_of_run(run.id):
        if is_columnar(output_set.item_type):  # particle tables: the first names only
            names = particle_page(project.catalog, output_set.id, 0, MAX_LISTED_ITEMS).names
            listed = [{"key": name, "viewers": []} for name in names.tolist()]
        else:
            records = project.catalog.items(output_set.id)[:MAX_LISTED_ITEMS]
            listed = [{"key": r.key, "viewers": viewers_of(r.item_type, r.data)} for r in records]
        details["outputs"][output_set.output]["items"] = listed
    return details


def viewers_of(item_type: str, data: dict[str, Any]) -> list[str]:
    """The viewers that can show an item (page names of the front end)."""
    if item_type == "Tomogram":
        return ["tomogram"]
    if item_type == "Volume":  # templates, references, masks
        return ["tomogram", "isosurface"]
    if item_type == "Average":
        return ["average"]
    if item_type == "TiltSeries":
        has_ctf = any(t.get("ctf") for t in data.get("tilts", []))
        return ["tiltseries", "ctf"] if has_ctf else ["tiltseries"]
    return []


def _pictures(root, folder: str) -> list[str]:
    """Project-relative paths of the PNG plots a run left in its outputs (first ones only)."""
    outputs = root / folder / "outputs"
    if not outputs.is_dir():
        return []
    found = sorted(p for p in outputs.rglob("*.png") if not p.name.startswith("."))
    return [p.relative_to(root).as_posix() for p in found[:MAX_PICTURES]]


def _describe_or_none(known: dict[str, type], name: str) -> dict[str, Any] | None:
    return known[name].describe() if name in known else None


def _get_run(project, run_id: int):
    try:
        return project.get_run(str(run_id))
    except TomoweaveError:
        raise HTTPException(404, f"no run {run_id}") from None


@router.get("/runs/{run_id}/log")
def run_log(request: Request, run_id: int, offset: int = 0, which: str = "run") -> dict[str, Any]:
    """New text of the run's log since byte ``offset`` (the last 64 kB on the first call)."""
    access = access_of(request)
    run = _get_run(access.project(), run_id)
    name = {"run": "run.log", "scheduler": "scheduler.out"}.get(which)
    if name is None:
        raise field_error("which", "which must be 'run' or 'scheduler'")
    path = access.root / run.folder / "logs" / name
    if not path.is_file():
        return {"text": "", "offset": 0, "size": 0}
    size = path.stat().st_size
    start = offset if 0 < offset <= size else max(0, size - LOG_TAIL_BYTES)
    with open(path, "rb") as stream:
        stream.seek(start)
        text = stream.read(size - start).decode("utf-8", errors="replace")
    return {"text": text, "offset": size, "size": size, "truncated": start > 0 and offset == 0}


@router.post("/runs/{run_id}/stop")
def stop_run(request: Request, run_id: int) -> dict[str, Any]:
    """Stop a running run: end its scheduler process group (scheduler and its workers)."""
    access = access_of(request)
    project = access.project()
    run = _get_run(project, run_id)
    record = run.record
    if run.state != "running" or not record.pid:
        raise HTTPException(409, f"run '{run.name}' is {run.state}, not running")
    if record.pid == os.getpid():
        raise HTTPException(409, f"run '{run.name}' runs inside the web server; it ends by itself")
    try:
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, signal.SIGTERM)
        else:
            os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + STOP_WAIT_SECONDS
    while time.time() < deadline and run.state == "running":
        access.reap()
        time.sleep(0.1)
    project.catalog.update_run(run.id, state="interrupted", finished=time.time(),
                               error="stopped from the web GUI")
    return run_summary(project, run)


@router.post("/runs/{run_id}/resume")
def resume_run(request: Request, run_id: int, executor: str | None = None) -> dict[str, Any]:
    """Continue a run in a new scheduler process: finished unchanged items are skipped."""
    access = access_of(request)
    project = access.project()
    run = _get_run(project, run_id)
    if run.state == "running":
        raise HTTPException(409, f"run '{run.name}' is already running")
    chosen = executor or run.record.executor or "local"
    if chosen not in EXECUTOR_NAMES:
        raise field_error("executor", f"executor must be one of {', '.join(EXECUTOR_NAMES)}")
    project.catalog.update_run(run.id, state="queued")
    access.adopt(project.launch(run, chosen))
    return run_summary(project, run)


@router.get("/runs/{run_id}/outputs/{output}/items")
def output_items(request: Request, run_id: int, output: str, offset: int = 0,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Items ``offset`` … ``offset + limit`` of an output (all by default); particle tables
    are paged from their files."""
    project = access_of(request).project()
    run = _get_run(project, run_id)
    try:
        output_set = project.output_set(run, output)
    except TomoweaveError as error:
        raise HTTPException(404, str(error)) from None
    if offset < 0 or (limit is not None and limit < 0):
        raise field_error("offset", "offset and limit must be >= 0")
    if is_columnar(output_set.item_type):
        page = particle_page(project.catalog, output_set.id, offset, limit)
        return [{"key": r["name"], "type": output_set.item_type, **r} for r in page.records()]
    stop = None if limit is None else offset + limit
    return [{"key": r.key, "type": r.item_type, **r.data}
            for r in project.catalog.items(output_set.id)[offset:stop]]


@router.post("/picks")
async def save_picks(request: Request, body: PickRequest) -> dict[str, Any]:
    """Store the picks of one tomogram by (re-)running a pick.manual run on its tomogram set."""
    access = access_of(request)
    return await run_in_threadpool(_save_picks, access, body)


def _save_picks(access, body: PickRequest) -> dict[str, Any]:
    with _pick_lock:
        project = access.project()
        picks: dict[str, list] = {}
        inputs = {"tomograms": body.tomograms}
        if body.run:
            existing = project.catalog.run_by_name(body.run)
            if existing is None or existing.protocol != PICK_PROTOCOL:
                raise field_error("run", f"'{body.run}' is not a {PICK_PROTOCOL} run")
            picks = dict(existing.params.get("picks", {}))
            inputs = existing.inputs.get("references", inputs)
        picks[body.tomogram] = [list(p) for p in body.picks_a]
        request = RunRequest(protocol=PICK_PROTOCOL, inputs=inputs, params={"picks": picks},
                             name=body.run, executor="inline", launch=False)
        run = _create(access, request)
        project.execute(run, "inline")  # a few positions: done at once, in this thread
        summary = run_summary(project, run)
        summary["picked"] = len(body.picks_a)
        return summary
