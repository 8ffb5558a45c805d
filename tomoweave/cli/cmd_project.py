"""Project commands: init, run, resume, status, show, protocols."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tomoweave.api import Project
from tomoweave.cli.common import (
    ExecutorOption,
    JsonOption,
    ProjectOption,
    RunProgress,
    WorkersOption,
    handle_errors,
    parse_inputs,
    parse_pairs,
    parse_value,
    print_json,
)
from tomoweave.engine.registry import get_protocol, protocols
from tomoweave.inspect_project import show, status
from tomoweave.model.sets import RunState, TaskState

STATE_COLOURS = {RunState.FINISHED: "green", RunState.FINISHED_WITH_FAILURES: "yellow",
                 RunState.FAILED: "red", RunState.RUNNING: "cyan", RunState.QUEUED: "white",
                 RunState.INTERRUPTED: "magenta"}


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("status")(status_command)
    app.command("show")(show_command)
    app.command("protocols")(protocols_command)


@handle_errors
def init(directory: Path = typer.Argument(..., help="folder of the new project")) -> None:
    """Create a project folder with its catalog."""
    project = Project.init(directory)
    typer.echo(f"project ready: {project.root}")


@handle_errors
def run(
    protocol: str = typer.Argument(..., help="protocol name, see `tomoweave protocols`"),
    project_dir: Path = ProjectOption,
    input: list[str] = typer.Option(None, "--input", "-i", help="NAME=RUN or NAME=RUN.OUTPUT"),
    set: list[str] = typer.Option(None, "--set", "-s", help="parameter KEY=VALUE"),
    name: str = typer.Option(None, "--name", "-n", help="run name (an existing name resumes it)"),
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a protocol and wait for it to end (exit 1 if it failed entirely)."""
    project = Project.open(project_dir)
    params = {k: parse_value(v) for k, v in parse_pairs(set, "--set").items()}
    execute_and_report(project, protocol, parse_inputs(input), params, name, executor, workers,
                       as_json)


def execute_and_report(project: Project, protocol: str, inputs: dict, params: dict,
                       name: str | None, executor: str, workers: int | None, as_json: bool) -> None:
    run_view = project.create_run(protocol, inputs, params, name, executor)
    with RunProgress(f"{run_view.name}", enabled=None if not as_json else False) as progress:
        project.execute(run_view, executor, workers, progress)
    report_run_end(project, run_view, as_json)


def report_run_end(project: Project, run_view, as_json: bool) -> None:
    summary = show(project, str(run_view.id), limit=0)["run"]
    if as_json:
        print_json(summary)
    else:
        failed = [j for j in summary["journal"] if j["state"] == TaskState.FAILED]
        typer.echo(f"{summary['name']}: {summary['state']} ({summary['items_done']} done, "
                   f"{summary['items_failed']} failed) -> {summary['folder']}")
        for entry in failed:
            error = entry["error"] or ""
            if not error.startswith(f"{entry['task']}:"):
                error = f"{entry['task']}: {error}"
            typer.echo(f"  {error}", err=True)
    if summary["state"] == RunState.FAILED:
        raise typer.Exit(1)


@handle_errors
def resume(run_name: str = typer.Argument(..., help="run name or number"),
           project_dir: Path = ProjectOption, executor: str = ExecutorOption,
           workers: int = WorkersOption, as_json: bool = JsonOption) -> None:
    """Continue a run: skip finished unchanged items, redo changed ones, retry failed ones."""
    project = Project.open(project_dir)
    run_view = project.get_run(run_name)
    with RunProgress(run_view.name, enabled=None if not as_json else False) as progress:
        project.execute(run_view, executor, workers, progress)
    report_run_end(project, run_view, as_json)


@handle_errors
def status_command(project_dir: Path = ProjectOption, as_json: bool = JsonOption) -> None:
    """List the runs of a project in creation order with their state."""
    runs = status(Project.open(project_dir))
    if as_json:
        print_json(runs)
        return
    table = Table("#", "name", "protocol", "state", "items", "outputs")
    for run_summary in runs:
        colour = STATE_COLOURS.get(run_summary["state"], "white")
        outputs = ", ".join(f"{n}: {o['count']}" for n, o in run_summary["outputs"].items())
        table.add_row(str(run_summary["id"]), run_summary["name"], run_summary["protocol"],
                      f"[{colour}]{run_summary['state']}[/]",
                      f"{run_summary['items_done']} ok / {run_summary['items_failed']} failed",
                      outputs)
    Console().print(table)


@handle_errors
def show_command(reference: str = typer.Argument(..., help="RUN or RUN.OUTPUT"),
                 project_dir: Path = ProjectOption, as_json: bool = JsonOption,
                 offset: int = typer.Option(0, "--offset", min=0,
                                            help="first item shown (paging)"),
                 limit: int = typer.Option(None, "--limit", min=0,
                                           help="items shown per output (default: all)")) -> None:
    """Show a run or one of its outputs, with its items' fields (a page of them with
    --offset/--limit; "count" is the size of the whole set)."""
    details = show(Project.open(project_dir), reference, offset=offset, limit=limit)
    if as_json:
        print_json(details)
        return
    Console().print_json(json.dumps(details, default=str))


@handle_errors
def protocols_command(name: str = typer.Argument(None, help="one protocol to describe"),
                      as_json: bool = JsonOption,
                      markdown: bool = typer.Option(False, "--markdown",
                                                    help="reference documentation")) -> None:
    """List the registered protocols (or describe one)."""
    if markdown:
        from tomoweave.docs import protocols_markdown

        typer.echo(protocols_markdown())
        return
    if name:
        description = get_protocol(name, check_programs=False).describe()
        if as_json:
            print_json(description)
        else:
            Console().print_json(json.dumps(description))
        return
    known = {n: cls.describe() for n, cls in protocols().items()}
    if as_json:
        print_json(known)
        return
    table = Table("protocol", "inputs", "outputs", "what it does")
    for protocol_name, info in known.items():
        table.add_row(protocol_name, ", ".join(info["inputs"]), ", ".join(info["outputs"]),
                      info["description"].splitlines()[0] if info["description"] else "")
    Console().print(table)
