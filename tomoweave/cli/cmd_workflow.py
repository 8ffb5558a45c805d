"""Workflow commands: run-workflow, export-workflow, demo, report, methods, plugins."""

from __future__ import annotations

import os
import shutil
from importlib.resources import files
from pathlib import Path

import typer

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

EXTERNAL_PROGRAMS = {
    "RELION": ["relion_refine", "relion_run_motioncorr", "relion_postprocess"],
    "IMOD": ["tilt", "newstack", "tiltxcorr", "ctfplotter"],
    "AreTomo": ["AreTomo2", "AreTomo3", "AreTomo"],
    "CTFFIND": ["ctffind", "ctffind5"],
    "MotionCor": ["MotionCor2", "MotionCor3"],
}


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
        protocol_class = get_protocol(run.protocol)
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
def plugins(as_json: bool = JsonOption) -> None:
    """External programs tomoweave can drive, and whether they are installed here."""
    found = {family: {p: shutil.which(p) for p in programs}
             for family, programs in EXTERNAL_PROGRAMS.items()}
    if as_json:
        print_json(found)
        return
    for family, programs in found.items():
        present = [f"{p} ({path})" for p, path in programs.items() if path]
        typer.echo(f"{family}: {', '.join(present) if present else 'not found'}")
