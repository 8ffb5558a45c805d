"""Small protocols that exercise the engine's long-task API (live log and progress,
checkpoints, fan-out). Importable by worker processes and by the CLI launcher of the tests
(``python -c "import engine_protocols; ..."`` with this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.engine import Input, InputError, ItemError, Output, ProcessContext, Protocol, Task, param
from tomoweave.engine.registry import register_protocol
from tomoweave.model import Particle

LIVE_WAIT_SECONDS = 30.0


def particle(name: str, score: float) -> Particle:
    return Particle(name=name, tomogram="none", position_a=(0.0, 0.0, 0.0), score=score)


class CountParams(BaseModel):
    count: int = param(2, ge=1, help="number of tasks")


class LiveReports(Protocol):
    """Logs a line and reports progress, then waits until both are visible outside the task:
    the line in run.log, the fraction in the catalog's journal. Fails if they never appear."""

    name = "test.live_reports"
    Params = CountParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params: CountParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key=f"task{i}", payload=i) for i in range(params.count)]

    def process(self, item: int, params: CountParams, context: ProcessContext):
        marker = f"live line of task {item} from pid {os.getpid()}"
        context.log(marker)
        context.progress(0.5, f"halfway through task {item}")
        log_path = context.run_dir / "logs" / "run.log"
        deadline = time.monotonic() + LIVE_WAIT_SECONDS
        seen_log = seen_progress = False
        while time.monotonic() < deadline and not (seen_log and seen_progress):
            seen_log = log_path.is_file() and marker in log_path.read_text()
            seen_progress = _journal_progress(context, context.task_key) == 0.5
            time.sleep(0.05)
        if not (seen_log and seen_progress):
            raise ItemError(f"not live: log line seen {seen_log}, progress seen {seen_progress}")
        return {"particles": particle(context.task_key, float(item))}


def _journal_progress(context: ProcessContext, task: str) -> float | None:
    connection = sqlite3.connect(f"file:{context.project_root / 'project.sqlite'}?mode=ro",
                                 uri=True, timeout=10)
    try:
        row = connection.execute("SELECT progress FROM journal WHERE task = ?", (task,)).fetchone()
    finally:
        connection.close()
    return None if row is None else row[0]


class IterateParams(BaseModel):
    iterations: int = param(6, ge=1, help="iterations of the task")
    seconds_per_iteration: float = param(0.0, ge=0, unit="s", help="sleep per iteration")
    size: int = param(8, ge=1, help="length of the state array")
    fail_at: int = param(-1, help="iteration that raises (-1: none)")


class Iterate(Protocol):
    """One task that iterates, checkpointing each iteration: a resumed run continues at the
    iteration after the last checkpoint. Each computed iteration is logged."""

    name = "test.iterate"
    Params = IterateParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params: IterateParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key="refine", payload=None)]

    def process(self, item: Any, params: IterateParams, context: ProcessContext):
        saved = context.load_checkpoint()
        if saved is None:
            start, total = 0, np.zeros(params.size)
        else:
            state, arrays = saved
            start, total = state["next_iteration"], arrays["total"]
            context.log(f"continuing from iteration {start}")
        for iteration in range(start, params.iterations):
            if iteration == params.fail_at:
                raise ItemError(f"iteration {iteration} fails as asked")
            total = total + iteration_update(iteration, params.size)
            time.sleep(params.seconds_per_iteration)
            context.log(f"computed iteration {iteration}")
            context.save_checkpoint({"next_iteration": iteration + 1}, {"total": total})
            context.progress((iteration + 1) / params.iterations,
                             f"iteration {iteration + 1}/{params.iterations}")
        return {"particles": particle("refine", float(np.sum(total)))}


def iteration_update(iteration: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(iteration)
    return rng.normal(size=size)


class FanOutParams(BaseModel):
    count: int = param(6, ge=0, help="items to fan out")
    fail_item: int = param(-1, help="item that raises (-1: none)")


def square_with_pid(item: tuple[int, int]) -> tuple[int, int]:
    value, fail_item = item
    if value == fail_item:
        raise ValueError(f"item {value} refuses")
    time.sleep(0.2)  # long enough that a pool spreads the items over several processes
    return value * value, os.getpid()


class FanOut(Protocol):
    """One task that fans ``count`` squarings out with context.map; the scores are the
    results in order, the names say which process computed each."""

    name = "test.fan_out"
    Params = FanOutParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params: FanOutParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key="fan", payload=None)]

    def process(self, item: Any, params: FanOutParams, context: ProcessContext):
        items = [(value, params.fail_item) for value in range(params.count)]
        results = context.map(square_with_pid, items)
        task_pid = os.getpid()
        return {"particles": [particle(f"item{i}_pid{pid}_task{task_pid}", float(value))
                              for i, (value, pid) in enumerate(results)]}


for _protocol in (LiveReports, Iterate, FanOut):
    register_protocol(_protocol)


def launcher_command(*arguments: str) -> list[str]:
    """The tomoweave CLI in a new process that knows these protocols."""
    import sys

    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import engine_protocols; "
            "from tomoweave.cli import app; app()")
    return [sys.executable, "-c", code, *arguments]


class KillableParams(BaseModel):
    count: int = param(4, ge=1, help="number of tasks")
    victim: int = param(-1, help="the task that waits, on its first attempt, to be killed")
    rows: int = param(3, ge=1, help="particles per task")


class Killable(Protocol):
    """Tasks that record each completed execution in ``work/completed.log``; the ``victim``
    task writes its worker's pid to its work folder and waits to be killed (first attempt)."""

    name = "test.killable"
    Params = KillableParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params: KillableParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key=f"task{i}", payload=i) for i in range(params.count)]

    def process(self, item: int, params: KillableParams, context: ProcessContext):
        marker = context.work_dir / "attempted"
        if item == params.victim and not marker.exists():
            marker.write_text("1")
            (context.work_dir / "pid.tmp").write_text(str(os.getpid()))
            (context.work_dir / "pid.tmp").replace(context.work_dir / "pid")
            time.sleep(LIVE_WAIT_SECONDS * 4)
            raise ItemError("the victim was not killed")
        with open(context.run_dir / "work" / "completed.log", "a") as log:
            log.write(f"{context.task_key}\n")
        rng = np.random.default_rng(item)
        return {"particles": [Particle(name=f"{context.task_key}/{j}", tomogram=context.task_key,
                                       position_a=tuple(rng.normal(0, 100, 3)), score=float(j))
                              for j in range(params.rows)]}


register_protocol(Killable)


class TrickleParams(BaseModel):
    folder: str = param(..., help="folder where batchN.txt files (one name a line) arrive")


class Trickle(Protocol):
    """A source that emits the particles named in each batch file of ``folder`` as it
    arrives, and keeps watching until a file named ``stop`` appears."""

    name = "test.trickle"
    Params = TrickleParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params: TrickleParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key=path.stem, payload=path.read_text().split())
                for path in sorted(Path(params.folder).glob("batch*.txt"))]

    def still_producing(self, params: TrickleParams, idle_seconds: float) -> bool:
        return not (Path(params.folder) / "stop").exists()

    def process(self, item: list[str], params: TrickleParams, context: ProcessContext):
        return {"particles": [particle(name, 1.0) for name in item]}


class SummaryParams(BaseModel):
    every_n: int = param(0, ge=0, help="re-run each time this many new particles arrived")


class Summarise(Protocol):
    """One task over all the particles of its input (like an average); each completed
    execution appends its particle count to ``work/runs.log``."""

    name = "test.summarise"
    Params = SummaryParams
    stream_rerun_param = "every_n"
    inputs = {"particles": Input(Particle, mapped=False)}
    outputs = {"particles": Output(Particle)}

    def plan(self, params: SummaryParams, inputs: dict[str, Any]) -> list[Task]:
        names = sorted(inputs["particles"].names.tolist())
        if not names:
            raise InputError("test.summarise needs particles")  # like average.refine
        return [Task(key="summary", payload=names, size=len(names))]

    def process(self, item: list[str], params: SummaryParams, context: ProcessContext):
        with open(context.run_dir / "work" / "runs.log", "a") as log:
            log.write(f"{len(item)}\n")
        return {"particles": particle("summary", float(len(item)))}


for _protocol in (Trickle, Summarise):
    register_protocol(_protocol)
