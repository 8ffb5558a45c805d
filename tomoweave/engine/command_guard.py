"""Runs one external program in its own process group and ends the group with its owner.

Started by :func:`tomoweave.engine.commands.run_program` as a new session (so it leads the
program's process group) with ``python -I command_guard.py WATCH CANCEL -- PROGRAM ARGS...``:

- ``WATCH``: comma-separated process ids that must stay alive (the scheduler of the run when it
  is on this host); the guard's own parent (the worker) is always watched;
- ``CANCEL``: a file whose appearance cancels the program, or ``-``.

When a watched process dies (SIGKILL of the worker or the scheduler, a run stopped from the web
GUI) or the cancel file appears, the whole group is killed: the program and everything it
started (``mpirun`` and its ranks), so nothing is left running. When the program ends by itself,
what it left behind in the group is ended too. Stdlib only: it starts in a few milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

POLL_SECONDS = 0.2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(parent: int, watched: list[int], cancel_path: str | None) -> bool:
    return (os.getppid() != parent or not all(_alive(pid) for pid in watched)
            or (cancel_path is not None and os.path.exists(cancel_path)))


def _end_leftovers() -> None:
    """Terminate what the finished program left in the group, but not the guard itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgid(0), signal.SIGTERM)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: command_guard.py WATCH_PIDS CANCEL_FILE -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    watched = [int(pid) for pid in argv[0].split(",") if pid]
    cancel_path = None if argv[1] == "-" else argv[1]
    parent = os.getppid()
    try:
        child = subprocess.Popen(argv[3:])
    except OSError as error:
        print(f"cannot start {argv[3]}: {error}", file=sys.stderr, flush=True)
        return 127
    while True:
        try:
            code = child.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if _owner_gone(parent, watched, cancel_path):
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the guard goes with its group
    _end_leftovers()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
