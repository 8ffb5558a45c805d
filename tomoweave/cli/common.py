"""Shared pieces of the CLI: project option, error handling, value parsing, progress bars."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from tomoweave.engine.errors import TomoweaveError

ProjectOption = typer.Option(Path("."), "--project", "-p", help="project folder")
JsonOption = typer.Option(False, "--json", help="machine-readable output")
ExecutorOption = typer.Option("local", "--executor", "-e", help="inline, local or dask")
WorkersOption = typer.Option(None, "--workers", "-j", help="parallel workers (default: cores)")


def handle_errors(function):
    """Turn expected errors into one clear line on stderr and a non-zero exit."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except typer.Exit:
            raise
        except (TomoweaveError, ValueError, FileNotFoundError, KeyError, OSError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def parse_value(text: str) -> Any:
    """'2' -> 2, '[1, 2]' -> [1, 2], 'true' -> True, anything else stays a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~", "") else value


def parse_pairs(pairs: list[str] | None, what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise TomoweaveError(f"{what} '{pair}' must look like KEY=VALUE")
        key, value = pair.split("=", 1)
        result[key.strip()] = value.strip()
    return result


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """--input NAME=RUN[.OUTPUT], repeatable; a repeated NAME collects several runs."""
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        key, value = next(iter(parse_pairs([pair], "--input").items()))
        if key in inputs:
            previous = inputs[key]
            inputs[key] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            inputs[key] = value
    return inputs


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


class RunProgress:
    """A terminal progress bar for a run's tasks; silent when stderr is not a terminal."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label = label
        self.total = 0
        self.finished = 0
        self.running: dict[str, tuple[float, str]] = {}  # task -> (fraction, message)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[message]}"),
                                 transient=False) if self.enabled else None
        self.task_id = self.progress.add_task(label, total=0, message="") \
            if self.progress else None

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def add_total(self, count: int) -> None:
        self.total += count
        if self.progress:
            self.progress.update(self.task_id, total=self.total)
        self._show()

    def advance(self) -> None:
        self.finished += 1
        self._show()

    def task_progress(self, key: str, fraction: float | None, message: str) -> None:
        """Live progress inside a running task (None: the task ended)."""
        if fraction is None:
            self.running.pop(key, None)
        else:
            self.running[key] = (fraction, message)
        self._show()

    def _show(self) -> None:
        if not self.progress:
            return
        completed = self.finished + sum(f for f, _ in self.running.values())
        latest = next(reversed(self.running.items()), None)
        message = f"{latest[0]}: {latest[1][1]}" if latest and latest[1][1] else ""
        description = f"{self.label} ({self.finished}/{self.total})"
        self.progress.update(self.task_id, completed=completed, description=description,
                             message=message)
