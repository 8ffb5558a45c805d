"""The scheduler: runs one run's tasks on an executor, journals each, commits results.

Resume: the journal keeps, per task, a digest of the protocol version, parameters, payload and
non-mapped inputs. A task already done with the same digest is skipped; a changed one is redone;
a failed or interrupted one is retried. Streaming: while an input set is open, new items are
planned as they arrive; outputs close when the inputs are closed and every task is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from tomoweave.engine import checkpoint
from tomoweave.engine.context import ProcessContext
from tomoweave.engine.errors import InputError
from tomoweave.engine.executors import Executor
from tomoweave.engine.inputs import inputs_open, inputs_signature, load_input_items
from tomoweave.engine.protocol import Task
from tomoweave.engine.provenance import environment_provenance, programs_provenance
from tomoweave.engine.registry import get_protocol
from tomoweave.engine.run_log import RunLog
from tomoweave.engine.task_events import EventRelay
from tomoweave.engine.worker import encode_payload, execute_task
from tomoweave.model.particle_table import ParticleTable
from tomoweave.model.sets import RunState, SetState, TaskState
from tomoweave.store.catalog import Catalog
from tomoweave.store.particle_tables import (
    TABLE_ITEM_TYPE,
    TABLES_FOLDER,
    is_columnar,
    remove_stale_tables,
)
from tomoweave.store.project_dir import ProjectLayout

STREAM_POLL_SECONDS = 2.0  # how often an open input is looked at for new items
LIVE_POLL_SECONDS = 0.25  # how often running tasks' log lines and progress are passed on
MAX_WORKER_LOSSES = 2  # a task whose worker dies is run again this many times, then failed


class RunScheduler:
    """Executes run ``run_id`` of the project at ``layout`` on ``executor``."""

    def __init__(self, layout: ProjectLayout, catalog: Catalog, run_id: int, executor: Executor,
                 progress=None):
        self.layout, self.catalog, self.executor = layout, catalog, executor
        self.run = catalog.run(run_id)
        self.protocol_class = get_protocol(self.run.protocol, project_root=layout.root)
        self.protocol = self.protocol_class()
        self.params = self.protocol_class.Params(**self.run.params)
        self.input_set_ids: dict[str, list[int]] = self.run.inputs.get("set_ids", {})
        self.log = RunLog(layout.root / self.run.folder / "logs" / "run.log")
        self.progress = progress
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.pending: dict[Any, tuple[Task, str, ProcessContext]] = {}
        self.lost: dict[str, int] = {}  # task key -> times its worker died
        self.replan = False  # plan again although the inputs did not change (a re-run is due)
        self.waiting_for = ""  # why planning found nothing to do yet (streaming)
        self.relay = EventRelay(run_id, self.log, catalog, progress)

    def execute(self) -> str:
        self._start()
        try:
            self._loop()
            state = self._final_state()
            self.catalog.update_run(self.run.id, state=state, finished=time.time(), error=None)
        except BaseException as error:
            _touch(self.cancel_path)  # external programs of this run stop, on any host
            self.log.write(f"run failed: {error}\n{traceback.format_exc()}")
            self._close_outputs()
            self.catalog.update_run(self.run.id, state=RunState.FAILED, finished=time.time(),
                                    error=f"{type(error).__name__}: {error}")
            raise
        finally:
            self.executor.shutdown()
        self.log.write(f"run ended: {state} ({self._count_text()})")
        return state

    def _start(self) -> None:
        run_dir = self.layout.root / self.run.folder
        for folder in (run_dir / "outputs", run_dir / "work"):
            for leftover in folder.rglob(".*.tmp"):  # half-written files of an interrupted attempt
                leftover.unlink()
        self.output_sets = {
            name: self.catalog.ensure_set(self.run.id, name, spec.item_type.__name__)
            for name, spec in self.protocol_class.outputs.items()
        }
        for output_set in self.output_sets.values():
            self.catalog.set_state(output_set.id, SetState.OPEN)
        self.cancel_path.unlink(missing_ok=True)
        provenance = environment_provenance()
        provenance["executor"] = type(self.executor).__name__
        provenance["programs"] = programs_provenance(self.protocol_class.programs, self.layout.root)
        # commands of tasks an earlier attempt finished stay: resume skips those tasks
        provenance["commands"] = list(self.run.provenance.get("commands", []))
        self.provenance = provenance
        self.catalog.update_run(self.run.id, state=RunState.RUNNING, started=time.time(), finished=None,
                                pid=os.getpid(), provenance=provenance)
        for program in provenance["programs"]:
            self.log.write(f"program {program['name']}: {program['path']} "
                           f"(version {program['version'] or 'unknown'})")
        self.log.write(f"run {self.run.name} ({self.run.protocol}) started; parameters: "
                       f"{json.dumps(self.run.params, sort_keys=True)}")

    def _loop(self) -> None:
        submitted: dict[str, int | None] = {}  # task key -> its size when last submitted
        last_new_task = time.time()
        planned_for = None  # inputs signature of the last planning: unchanged inputs, same plan
        while True:
            still_open = inputs_open(self.catalog, self.input_set_ids) or \
                self.protocol.still_producing(self.params, time.time() - last_new_task)
            signature = inputs_signature(self.catalog, self.input_set_ids)
            tasks = []
            if signature != planned_for or not self.input_set_ids or self.replan:
                self.replan = False
                inputs, origin = load_input_items(self.catalog, self.protocol_class,
                                                  self.input_set_ids)
                tasks = [t for t in self._plan(inputs, still_open)
                         if t.key not in submitted or self._grown(t, submitted[t.key], still_open)]
                planned_for = signature
                for task in tasks:
                    submitted[task.key] = task.size
            if tasks:
                last_new_task = time.time()
            if self.progress is not None:
                self.progress.add_total(len(tasks))
            for task in tasks:
                self._submit(task, inputs, origin)
            if not self.pending and not still_open:
                break
            for handle in self._wait(still_open):
                self._collect(handle)

    def _plan(self, inputs: dict[str, Any], still_open: bool) -> list[Task]:
        """The protocol's tasks; while inputs are still growing, inputs it refuses (too few
        particles for an average yet) mean no task yet rather than a failed run."""
        try:
            return self.protocol.plan(self.params, inputs)
        except InputError as error:
            if not still_open or not self.input_set_ids:
                raise
            if str(error) != self.waiting_for:
                self.log.write(f"waiting for more input: {error}")
                self.waiting_for = str(error)
            return []

    def _grown(self, task: Task, last_size: int | None, still_open: bool) -> bool:
        """Whether a task submitted before runs again because its input grew (see
        Protocol.stream_rerun_param); never while its previous attempt is still running."""
        name = self.protocol_class.stream_rerun_param
        if name is None or task.size is None or last_size is None:
            return False
        if any(pending.key == task.key for pending, _, _ in self.pending.values()):
            self.replan = self.replan or task.size != last_size
            return False
        every = int(getattr(self.params, name) or 0)
        due = task.size != last_size if not still_open else (
            every > 0 and task.size - last_size >= every)
        if due:
            self.log.write(f"{task.key}: {task.size - last_size:+d} items since its last run "
                           f"({last_size} -> {task.size}); running it again"
                           + ("" if still_open else " (inputs complete)"))
        return due

    def _wait(self, still_open: bool) -> list[Any]:
        """Tasks that ended, passing on the running tasks' live reports meanwhile. While inputs
        are open, return early when they changed (a cheap look at the catalog) so new items are
        planned at once; a source protocol (no inputs) plans again every STREAM_POLL_SECONDS."""
        signature = inputs_signature(self.catalog, self.input_set_ids) if still_open else None
        deadline = time.monotonic() + STREAM_POLL_SECONDS
        while True:
            if self.pending:
                done = self.executor.wait_any(list(self.pending), timeout=LIVE_POLL_SECONDS)
            else:
                time.sleep(LIVE_POLL_SECONDS)
                done = []
            self.relay.drain()
            if done or (not still_open and not self.pending):
                return done
            if still_open and self._may_have_new_work(signature, deadline):
                return []

    def _may_have_new_work(self, signature: tuple, deadline: float) -> bool:
        if not self.input_set_ids:
            return time.monotonic() >= deadline
        return inputs_signature(self.catalog, self.input_set_ids) != signature

    def _submit(self, task: Task, inputs: dict[str, Any], origin: dict[str, int]) -> None:
        mapped = self.protocol_class.mapped_input()
        broadcast = {n: v for n, v in inputs.items() if n != mapped}
        payload_type, payload = encode_payload(task.payload)
        digest = _digest(self.protocol_class, self.run.params, payload, broadcast)
        previous = self.catalog.journal(self.run.id).get(task.key)
        if previous and previous["state"] == TaskState.DONE and previous["digest"] == digest:
            self.counts["skipped"] += 1
            self.log.write(f"{task.key}: unchanged since it finished, skipped")
            self._advance()
            return
        if mapped and task.key in origin and not task.sources:
            task.sources = [(origin[task.key], task.key)]
        self.catalog.mark_task_started(self.run.id, task.key, digest)
        self.lost[task.key] = 0
        context = ProcessContext(self.layout.root, self.run.folder, task.key, broadcast,
                                 self.executor.threads_per_task(), digest=digest,
                                 executor_kind=self.executor.kind)
        self.relay.watch(task.key, context.events_path)
        if self.executor.kind == "inline":  # same process: its reports are passed on at once
            context.listener = lambda: self.relay.drain(task.key)
        self._dispatch(task, digest, context)

    def _dispatch(self, task: Task, digest: str, context: ProcessContext) -> None:
        payload_type, payload = encode_payload(task.payload)
        handle = self.executor.submit(execute_task, self.run.protocol, self.run.params,
                                      payload_type, payload, context,
                                      self.protocol_class.__module__)
        self.pending[handle] = (task, digest, context)

    def _retry_lost(self, task: Task, digest: str, context: ProcessContext, error: str) -> bool:
        """A task whose worker died (killed, out of memory) runs again on another worker, up
        to MAX_WORKER_LOSSES times; it continues from its checkpoint if it saved one. Its
        outputs are committed only when an attempt returns, so nothing is stored twice."""
        self.lost[task.key] = self.lost.get(task.key, 0) + 1
        if self.lost[task.key] > MAX_WORKER_LOSSES:
            return False
        self.log.write(f"{task.key}: its worker was lost ({error}); running it again "
                       f"({self.lost[task.key]} of {MAX_WORKER_LOSSES} retries)")
        self.catalog.mark_task_started(self.run.id, task.key, digest)
        self._dispatch(task, digest, context)
        return True

    def _collect(self, handle: Any) -> None:
        task, digest, context = self.pending.pop(handle)
        worker_lost = False
        try:
            outcome = handle.result()
        except BaseException as error:  # the worker process itself died
            worker_lost = True
            lost = f"{type(error).__name__}: {error}"
            if self._retry_lost(task, digest, context, lost):
                return
            outcome = {"error": f"worker failed: {lost}", "outputs": {},
                       "commands": [], "traceback": None, "seconds": 0.0}
        self.relay.finish(task.key)
        self._record_commands(task.key, outcome.get("commands") or [])
        if outcome["error"]:
            self.counts["failed"] += 1
            self.catalog.fail_task(self.run.id, task.key, outcome["error"])
            self.log.write(f"{task.key}: FAILED: {_without_key(task.key, outcome['error'])}")
            if outcome.get("traceback"):
                self.log.write(outcome["traceback"])
        else:
            by_set = {self.output_sets[name].id: records
                      for name, records in outcome["outputs"].items()}
            self.catalog.commit_task(self.run.id, task.key, digest, by_set, task.sources)
            self._remove_stale_tables(task.key, outcome["outputs"])
            self.counts["done"] += 1
            self.log.write(f"{task.key}: done in {outcome['seconds']:.1f} s")
        if not worker_lost:  # the task ran to its end: nothing to continue from
            checkpoint.remove_checkpoint(context.checkpoint_path)
        self._advance()

    def _remove_stale_tables(self, key: str, outputs: dict[str, list]) -> None:
        """Particle tables of earlier attempts of this task (another digest) go."""
        for name, output_set in self.output_sets.items():
            if is_columnar(output_set.item_type):
                kept = {Path(json.loads(data)["path"]).name for _, kind, data
                        in outputs.get(name, []) if kind == TABLE_ITEM_TYPE}
                folder = self.layout.root / self.run.folder / "outputs" / TABLES_FOLDER / name
                remove_stale_tables(folder, key, kept)

    @property
    def cancel_path(self):
        return self.layout.root / self.run.folder / "logs" / "cancel"

    def _record_commands(self, key: str, commands: list[dict]) -> None:
        if not commands:
            return
        kept = [c for c in self.provenance["commands"] if c.get("task") != key]
        self.provenance["commands"] = kept + commands  # a retried task keeps its last attempt
        self.catalog.update_run(self.run.id, provenance=self.provenance)

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress.advance()

    def _close_outputs(self) -> None:
        for output_set in getattr(self, "output_sets", {}).values():
            self.catalog.set_state(output_set.id, SetState.CLOSED)

    def _final_state(self) -> str:
        self._close_outputs()
        if self.counts["failed"] == 0:
            return RunState.FINISHED
        if self.counts["done"] + self.counts["skipped"] > 0:
            return RunState.FINISHED_WITH_FAILURES
        return RunState.FAILED

    def _count_text(self) -> str:
        return ", ".join(f"{value} {name}" for name, value in self.counts.items())


def _touch(path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:  # the run is failing already; the guard also watches the scheduler's pid
        pass


def _without_key(key: str, message: str) -> str:
    return message[len(key) + 1:].lstrip() if message.startswith(f"{key}:") else message


def _digest_default(value: Any) -> Any:
    """JSON stand-in of payload values json cannot encode: tables by their content digest."""
    if isinstance(value, ParticleTable):
        return value.content_digest()
    return str(value)


def _digest(protocol_class, params: dict, payload: Any, broadcast: dict[str, Any]) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, ParticleTable):
            return value.content_digest()
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    text = json.dumps({"protocol": protocol_class.name, "version": protocol_class.version,
                       "params": params, "payload": payload,
                       "inputs": {k: plain(v) for k, v in broadcast.items()}},
                      sort_keys=True, default=_digest_default)
    return hashlib.sha256(text.encode()).hexdigest()
