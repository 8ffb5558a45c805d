"""Project-wide endpoints: protocols, the run graph, outputs by item type, live events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tomoweave.inspect_project import run_summary, set_state_shown

router = APIRouter(prefix="/api")
EVENT_POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0


def access_of(request: Request):
    return request.app.state.access


@router.get("/project")
def project_info(request: Request) -> dict[str, Any]:
    access = access_of(request)
    return {"root": str(access.root), "name": access.root.name}


@router.get("/protocols")
def list_protocols(request: Request) -> list[dict[str, Any]]:
    return [cls.describe() for cls in access_of(request).protocols().values()]


@router.get("/protocols/{name}")
def describe_protocol(request: Request, name: str) -> dict[str, Any]:
    known = access_of(request).protocols()
    if name not in known:
        raise HTTPException(404, f"unknown protocol '{name}'")
    return known[name].describe()


@router.get("/graph")
def graph(request: Request) -> dict[str, Any]:
    """Runs as nodes, and an edge from each output set to every run that reads it."""
    access = access_of(request)
    access.reap()
    project = access.project()
    nodes, edges = [], []
    set_owner: dict[int, tuple[int, str, str]] = {}
    runs = project.runs()
    for run in runs:
        for output_set in project.catalog.sets_of_run(run.id):
            set_owner[output_set.id] = (run.id, output_set.output, output_set.item_type)
    for run in runs:
        summary = run_summary(project, run)
        nodes.append(summary)
        for input_name, set_ids in run.record.inputs.get("set_ids", {}).items():
            for set_id in set_ids:
                if set_id in set_owner:
                    source, output, item_type = set_owner[set_id]
                    edges.append({"source": source, "target": run.id, "output": output,
                                  "input": input_name, "type": item_type})
    last_event = project.catalog.connection.execute("SELECT MAX(id) FROM events").fetchone()[0]
    return {"nodes": nodes, "edges": edges, "last_event": last_event or 0}


@router.get("/outputs")
def outputs_of_type(request: Request, type: str | None = None) -> list[dict[str, Any]]:
    """Output sets (optionally only those holding ``type`` items), newest run first: what an
    input selector offers."""
    project = access_of(request).project()
    found = []
    for run in reversed(project.runs()):
        state = run.state
        for output_set in project.catalog.sets_of_run(run.id):
            if type and output_set.item_type != type:
                continue
            found.append({"reference": f"{run.name}.{output_set.output}", "run_id": run.id,
                          "run": run.name, "protocol": run.protocol, "run_state": state,
                          "output": output_set.output, "type": output_set.item_type,
                          "state": set_state_shown(state, output_set.state),
                          "count": project.catalog.count_items(output_set.id)})
    return found


@router.get("/events")
def events_after(request: Request, after: int = 0) -> list[dict[str, Any]]:
    """Catalog events newer than ``after`` (for clients that poll instead of streaming)."""
    return access_of(request).project().catalog.events_after(after)


@router.get("/events/stream")
async def event_stream(request: Request, after: int = 0) -> StreamingResponse:
    """Server-sent events: one message per catalog event (run created, state changes)."""
    access = access_of(request)

    async def messages():
        last, idle = after, 0.0
        while not await request.is_disconnected():
            events = await run_in_threadpool(access.project_events_after, last)
            for event in events:
                last = event["id"]
                yield f"id: {last}\ndata: {json.dumps(event)}\n\n"
            idle = 0.0 if events else idle + EVENT_POLL_SECONDS
            if idle >= HEARTBEAT_SECONDS:
                idle = 0.0
                yield ": still here\n\n"
            await asyncio.sleep(EVENT_POLL_SECONDS)

    return StreamingResponse(messages(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
