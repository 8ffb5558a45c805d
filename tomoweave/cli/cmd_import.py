"""`tomoweave import FORMAT FILES... --OPTION VALUE` and `tomoweave export FORMAT ...`.

Short forms of running the protocols ``import.FORMAT`` / ``export.FORMAT``: positional arguments
become the ``files`` parameter, and every parameter is an option named after it without its unit
(``pixel_size_a`` -> ``--pixel-size``), plus any alias the protocol declares (``--cs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tomoweave.api import Project
from tomoweave.cli.cmd_project import execute_and_report
from tomoweave.cli.common import (
    ExecutorOption,
    JsonOption,
    ProjectOption,
    WorkersOption,
    handle_errors,
    parse_inputs,
    parse_value,
)
from tomoweave.engine.errors import InputError
from tomoweave.engine.registry import get_protocol, protocols

UNIT_SUFFIXES = ("_e_a2", "_a2", "_a", "_deg", "_kv", "_mm", "_px", "_um", "_nm", "_s")
# --help is ours: the format's own options are printed, not only the generic ones.
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True,
              "help_option_names": []}
HELP_FLAGS = ("--help", "-h")


def register(app: typer.Typer) -> None:
    app.command("import", context_settings=EXTRA_ARGS)(import_command)
    app.command("export", context_settings=EXTRA_ARGS)(export_command)


def cli_flags(protocol_class) -> dict[str, str]:
    """Command-line flag -> parameter name for every parameter of a protocol."""
    flags: dict[str, str] = {}
    for field_name, field in protocol_class.Params.model_fields.items():
        flags["--" + field_name.replace("_", "-")] = field_name
        short = field_name
        for suffix in UNIT_SUFFIXES:
            if short.endswith(suffix) and len(short) > len(suffix):
                short = short[: -len(suffix)]
                break
        flags.setdefault("--" + short.replace("_", "-"), field_name)
        extra = field.json_schema_extra or {}
        if isinstance(extra, dict) and extra.get("cli"):
            flags[str(extra["cli"])] = field_name
    return flags


def parse_protocol_args(protocol_class, tokens: list[str]) -> dict[str, Any]:
    """Positional tokens -> ``files``; ``--flag value`` -> parameters (repeated flags -> list)."""
    flags = cli_flags(protocol_class)
    fields = protocol_class.Params.model_fields
    params: dict[str, Any] = {}
    files: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("-") and not token.startswith("--") and len(token) > 1 and not (
                _is_number(token)):
            raise InputError(f"{protocol_class.name}: unknown option {token} (short options: "
                             f"-p project, -i input, -n name, -e executor, -j workers)")
        if not token.startswith("--"):
            files.append(token)
            index += 1
            continue
        flag, _, inline_value = token.partition("=")
        if flag not in flags:
            raise InputError(f"{protocol_class.name}: unknown option {flag} "
                             f"(options: {', '.join(sorted(flags))})")
        field_name = flags[flag]
        values = [inline_value] if inline_value else []
        index += 1
        while not values or (index < len(tokens) and _takes_more(fields[field_name], tokens[index])):
            if index >= len(tokens) or tokens[index].startswith("--"):
                values = values or ["true"]
                break
            values.append(tokens[index])
            index += 1
        parsed = [parse_value(v) for v in values]
        params[field_name] = parsed if len(parsed) > 1 or _is_list(fields[field_name]) else parsed[0]
    if files:
        if "files" not in fields:
            raise InputError(f"{protocol_class.name} takes no file arguments")
        params["files"] = files
    return params


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def protocol_help(kind: str, protocol_class) -> str:
    """The options of one import/export format, generated from its parameter declaration."""
    flags: dict[str, list[str]] = {}
    for flag, field_name in cli_flags(protocol_class).items():
        flags.setdefault(field_name, []).append(flag)
    fields = protocol_class.Params.model_fields
    format_name = protocol_class.name.split(".", 1)[1]
    usage = "FILES... " if "files" in fields else ""
    lines = [f"Usage: tomoweave {kind} {format_name} {usage}[OPTIONS]", "",
             (protocol_class.__doc__ or "").strip().splitlines()[0], "", "Options:"]
    for field_name, field in fields.items():
        if field_name == "files":
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        unit = f" [{extra['unit']}]" if extra.get("unit") else ""
        default = "" if field.is_required() or field.default in (None, []) else (
            f" (default: {field.default!r})")
        names = ", ".join(sorted(dict.fromkeys(flags[field_name]), key=len))
        lines.append(f"  {names}{unit}: {field.description or ''}{default}")
    if getattr(protocol_class, "inputs", None):
        inputs = ", ".join(protocol_class.inputs)
        lines.append(f"  --input, -i NAME=RUN[.OUTPUT]: inputs from the project ({inputs})")
    lines += ["  --project, -p DIR: project folder (default: .)",
              "  --name, -n NAME: run name", "  --executor, -e inline|local|dask",
              "  --workers, -j N: parallel workers", "  --json: machine-readable output"]
    return "\n".join(lines)


def formats_help(kind: str) -> str:
    names = sorted(n.split(".", 1)[1] for n in protocols() if n.startswith(kind + "."))
    return (f"Usage: tomoweave {kind} FORMAT {'FILES... ' if kind == 'import' else ''}[OPTIONS]"
            f"\n\nFormats: {', '.join(names)}\n`tomoweave {kind} FORMAT --help` lists a "
            f"format's options.")


def _is_list(field) -> bool:
    return "list" in str(field.annotation).lower() or "tuple" in str(field.annotation).lower()


def _takes_more(field, token: str) -> bool:
    return _is_list(field) and not token.startswith("--")


def _protocol_for(kind: str, format_name: str):
    name = f"{kind}.{format_name}"
    if name not in protocols():
        available = sorted(n.split(".", 1)[1] for n in protocols() if n.startswith(kind + "."))
        raise InputError(f"no {kind} format '{format_name}' (available: {', '.join(available)})")
    return get_protocol(name)


@handle_errors
def import_command(
    ctx: typer.Context,
    format_name: str = typer.Argument(None, metavar="FORMAT", help="mdoc, tiltseries, imod, ..."),
    project_dir: Path = ProjectOption,
    input: list[str] = typer.Option(None, "--input", "-i", help="NAME=RUN or NAME=RUN.OUTPUT"),
    name: str = typer.Option(None, "--name", "-n", help="run name"),
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    as_json: bool = JsonOption,
) -> None:
    """Import files: `tomoweave import mdoc TS_*.mdoc -p DIR`, `tomoweave import imod TS_01.xf
    -i tilt_series=RUN`; `tomoweave import FORMAT --help` lists a format's options."""
    _run_short_form(ctx, "import", format_name, project_dir, input, name, executor, workers,
                    as_json)


@handle_errors
def export_command(
    ctx: typer.Context,
    format_name: str = typer.Argument(None, metavar="FORMAT", help="relion5, imod, warp, ..."),
    project_dir: Path = ProjectOption,
    input: list[str] = typer.Option(None, "--input", "-i", help="NAME=RUN or NAME=RUN.OUTPUT"),
    name: str = typer.Option(None, "--name", "-n", help="run name"),
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    as_json: bool = JsonOption,
) -> None:
    """Export project data to another program's files: `tomoweave export relion5
    -i tilt_series=RUN -i particles=RUN --out-dir DIR`; `tomoweave export FORMAT --help` lists a
    format's options."""
    _run_short_form(ctx, "export", format_name, project_dir, input, name, executor, workers,
                    as_json)


def _run_short_form(ctx: typer.Context, kind: str, format_name: str | None, project_dir: Path,
                    input: list[str] | None, name: str | None, executor: str,
                    workers: int | None, as_json: bool) -> None:
    tokens = list(ctx.args)
    if format_name in HELP_FLAGS or format_name is None:
        typer.echo(formats_help(kind))
        if format_name is None:
            raise typer.Exit(1)
        return
    protocol_class = _protocol_for(kind, format_name)
    if any(token in HELP_FLAGS for token in tokens):
        typer.echo(protocol_help(kind, protocol_class))
        return
    params = parse_protocol_args(protocol_class, tokens)
    project = Project.open(project_dir)
    execute_and_report(project, protocol_class.name, parse_inputs(input), params, name,
                       executor, workers, as_json)
