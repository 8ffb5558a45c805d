"""Running an external program for a task: live output, timeout, cancellation, provenance.

The program runs under ``command_guard.py`` in a process group of its own. Its output (stdout
and stderr, in order) reaches the run log line by line while it runs; a timeout, an
interruption of the task, or the death of the worker or of the run's scheduler kills the whole
group (``mpirun`` and every rank with it). What ran is recorded in the run's provenance: the
exact command line, each program's path and version, the exit code and the time it took.
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomoweave.engine.errors import ItemError
from tomoweave.engine.programs import Program

if TYPE_CHECKING:
    from tomoweave.engine.context import ProcessContext

GUARD = Path(__file__).with_name("command_guard.py")
TAIL_LINES = 15
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def run_program(context: ProcessContext, args: Sequence[str | Path], *,
                program: Program | Sequence[Program] | None = None,
                cwd: str | Path | None = None, env: dict[str, str] | None = None,
                timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` for the task of ``context``; see :meth:`ProcessContext.run_command`."""
    programs = [program] if isinstance(program, Program) else list(program or [])
    args = _resolved(args, programs, context)
    name = Path(args[0]).name
    command_line = shlex.join(args)
    record: dict[str, Any] = {
        "task": context.task_key, "command": command_line,
        "cwd": str(cwd) if cwd else None,
        "programs": [_program_record(p, args, context) for p in programs],
    }
    context.commands.append(record)
    context.log(f"$ {command_line}")
    started = time.time()
    returncode, tail, output = _stream(context, args, name, cwd=cwd, env=env, timeout_s=timeout_s)
    record.update(exit_code=returncode, seconds=round(time.time() - started, 3))
    if returncode is None:
        record["exit_code"] = "timeout"
        raise ItemError(f"{name} did not finish within {timeout_s:g} s and was killed"
                        f"{_tail_text(tail)}")
    if returncode < 0 or returncode == 128 + signal.SIGKILL:
        cancelled = Path(context.cancel_path).exists()
        why = "the run was cancelled" if cancelled else f"killed by signal {abs(returncode) % 128}"
        raise ItemError(f"{name} stopped: {why}{_tail_text(tail)}")
    if returncode != 0:
        raise ItemError(f"{name} exited with code {returncode}{_tail_text(tail)}")
    return subprocess.CompletedProcess(args, returncode, stdout=output, stderr="")


def _resolved(args: Sequence[str | Path], programs: list[Program],
              context: ProcessContext) -> list[str]:
    """The command with each bare program name replaced by the program's located path."""
    if not args:
        raise ItemError(f"{context.task_key}: an empty command line")
    by_name = {n: p for p in programs for n in p.executable_names}
    resolved = []
    for arg in args:
        text = str(arg)
        if text in by_name:
            text = str(by_name[text].require(context.project_root))
        resolved.append(text)
    return resolved


def _program_record(program: Program, args: list[str], context: ProcessContext) -> dict:
    path = next((Path(a) for a in args if Path(a).name in program.executable_names), None)
    path = path if path is not None and path.is_absolute() else program.locate(context.project_root)
    return {"name": program.name, "family": program.family,
            "path": str(path) if path else None,
            "version": program.version(path) if path else None}


def _tail_text(tail: deque) -> str:
    return "; its last lines:\n" + "\n".join(tail) if tail else " (no output)"


def _guard_command(context: ProcessContext, args: list[str]) -> list[str]:
    watched = [str(pid) for pid in context.owner_pids()]
    cancel = str(context.cancel_path)
    return [sys.executable, "-I", str(GUARD), ",".join(watched), cancel, "--", *args]


def _stream(context: ProcessContext, args: list[str], name: str, *, cwd, env,
            timeout_s: float | None) -> tuple[int | None, deque, str]:
    """Run under the guard, logging each line; (exit code or None on timeout, tail, output)."""
    try:
        process = subprocess.Popen(
            _guard_command(context, args), cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})})
    except OSError as error:
        raise ItemError(f"cannot start {name}: {error}") from error
    tail: deque = deque(maxlen=TAIL_LINES)
    output: list[str] = []
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        timed_out = _pump(process, deadline, lambda line: _emit(context, name, line, tail, output))
        if timed_out:
            _kill_group(process)
            process.wait()
            return None, tail, "\n".join(output)
        return process.wait(), tail, "\n".join(output)
    except BaseException:  # interrupted task (KeyboardInterrupt, SystemExit): nothing left running
        _kill_group(process)
        process.wait()
        raise
    finally:
        process.stdout.close()


def _pump(process: subprocess.Popen, deadline: float | None, emit) -> bool:
    """Read the program's output until it closes; True when the deadline passed first."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    pending = b""
    descriptor = process.stdout.fileno()
    try:
        while True:
            wait_s = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait_s <= 0:
                return True
            if not selector.select(timeout=wait_s):
                continue
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            *lines, pending = _LINE_BREAK.split(pending + chunk)
            for line in lines:
                emit(line)
        if pending:
            emit(pending)
        return False
    finally:
        selector.close()


def _emit(context: ProcessContext, name: str, raw: bytes, tail: deque, output: list[str]) -> None:
    line = raw.decode("utf-8", errors="replace").rstrip()
    output.append(line)
    if line.strip():
        tail.append(line)
        context.log(f"[{name}] {line}")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
