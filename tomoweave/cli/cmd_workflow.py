"""Workflow commands: run-workflow, export-workflow, demo, report, methods, plugins."""

from __future__ import annotations

import os
import shutil
from importlib.resources import files
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
    print_json,
)
from tomoweave.engine.registry import get_protocol
from tomoweave.report import write_report
from tomoweave.store.project_dir import atomic_write_text
from tomoweave.workflow import export_workflow, run_workflow, stream_workflow


def register(app: typer.Typer) -> None:
    app.command("run-workflow")(run_workflow_command)
    app.command("export-workflow")(export_workflow_command)
    app.command("demo")(demo)
    app.command("report")(report)
    app.command("methods")(methods)
    app.command("plugins")(plugins)


def demo_workflow_path() -> Path:
    return Path(str(files("tomoweave.workflows").joinpath("demo.yaml")))


@handle_errors
def run_workflow_command(workflow: Path = typer.Argument(..., help="workflow YAML"),
                         project_dir: Path = ProjectOption, executor: str = ExecutorOption,
                         workers: int = WorkersOption,
                         stream: bool = typer.Option(False, "--stream", help="start every run at "
                                                     "once; each processes items as they arrive "
                                                     "(with import.mdoc --set watch=true)")) -> None:
    """Run (or resume) the runs of a workflow file in dependency order."""
    if not (project_dir / "project.sqlite").exists():
        Project.init(project_dir)
    project = Project.open(project_dir)
    if stream:
        runs = stream_workflow(project, workflow, executor, workers)
    else:
        run_workflow(project, workflow, executor, workers, RunProgress, announce_run_end)
        return
    for run in runs:
        announce_run_end(run)


def announce_run_end(run) -> None:
    record = run.record
    seconds = f" in {record.finished - record.started:.0f} s" if record.finished else ""
    typer.echo(f"{run.name} ({run.protocol}): {run.state}{seconds}", err=False)


@handle_errors
def export_workflow_command(project_dir: Path = ProjectOption,
                            out: Path = typer.Option(None, "--out", "-o", help="YAML file")) -> None:
    """Write the workflow YAML that reproduces this project's runs."""
    text = export_workflow(Project.open(project_dir))
    if out:
        atomic_write_text(out, text)
        typer.echo(f"workflow written: {out}")
    else:
        typer.echo(text)


@handle_errors
def demo(directory: Path = typer.Argument(Path("demo_project"), help="project folder to create"),
         executor: str = ExecutorOption, workers: int = WorkersOption,
         fresh: bool = typer.Option(False, "--fresh", help="delete the folder first")) -> None:
    """Simulate a dataset and run the whole pipeline on it, ending with an HTML report."""
    if fresh and directory.exists():
        shutil.rmtree(directory)
    from tomoweave.sim.templates import template_dir

    os.environ.setdefault("TOMOWEAVE_TEMPLATES", str(template_dir()))
    project = Project.init(directory)
    workflow_copy = directory / "demo_workflow.yaml"
    shutil.copyfile(demo_workflow_path(), workflow_copy)
    run_workflow(project, workflow_copy, executor, workers, RunProgress, announce_run_end)
    report_path = write_report(project)
    typer.echo(f"report: {report_path}")


@handle_errors
def report(project_dir: Path = ProjectOption) -> None:
    """Write report.html: runs, parameters, a picture per output."""
    typer.echo(f"report: {write_report(Project.open(project_dir))}")


@handle_errors
def methods(project_dir: Path = ProjectOption, as_json: bool = JsonOption) -> None:
    """A methods paragraph for the project's finished runs, with citations."""
    project = Project.open(project_dir)
    sentences, citations = [], []
    for run in project.runs():
        if run.state not in ("finished", "finished with failures"):
            continue
        protocol_class = get_protocol(run.protocol, check_programs=False)
        settings = ", ".join(f"{k} = {v}" for k, v in run.params.items()
                             if v not in (None, [], {}, "") and k != "files")
        cited = [c for c in protocol_class.citations if c not in citations]
        citations.extend(cited)
        marks = "".join(f"[{citations.index(c) + 1}]" for c in protocol_class.citations)
        sentences.append(f"{protocol_class.label or run.protocol} ({run.protocol}"
                         f"{'; ' + settings if settings else ''}){marks}.")
    from tomoweave import __version__

    text = (f"Data were processed with tomoweave {__version__}. " + " ".join(sentences))
    if as_json:
        print_json({"methods": text, "citations": citations})
        return
    typer.echo(text)
    for index, citation in enumerate(citations, start=1):
        typer.echo(f"[{index}] {citation}")


@handle_errors
def plugins(as_json: bool = JsonOption,
            project_dir: Path = typer.Option(None, "--project", "-p", help="also read the "
                                             "project's programs.toml")) -> None:
    """External programs tomoweave can drive, whether they are found here, and how to get them."""
    from tomoweave.engine.registry import programs, protocols_using

    listing = []
    for program in programs().values():
        record = program.describe(project_dir)
        record["protocols"] = protocols_using(program)
        listing.append(record)
    if as_json:
        print_json(listing)
        return
    table = Table("program", "family", "found", "version", "protocols")
    for record in listing:
        where = (f"[green]{record['path']}[/]" if record["found"] else
                 f"[red]missing[/]: {record['install_hint']} (or set {record['env_var']})")
        table.add_row(record["name"], record["family"], where, record["version"] or "",
                      ", ".join(record["protocols"]))
    Console().print(table)
