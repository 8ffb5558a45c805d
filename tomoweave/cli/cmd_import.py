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
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


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
    format_name: str = typer.Argument(..., metavar="FORMAT", help="mdoc, tiltseries, volume, ..."),
    project_dir: Path = ProjectOption,
    name: str = typer.Option(None, "--name", "-n", help="run name"),
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    as_json: bool = JsonOption,
) -> None:
    """Import files: `tomoweave import mdoc TS_*.mdoc -p DIR`, `tomoweave import tiltseries ...`."""
    protocol_class = _protocol_for("import", format_name)
    params = parse_protocol_args(protocol_class, list(ctx.args))
    project = Project.open(project_dir)
    execute_and_report(project, protocol_class.name, {}, params, name, executor, workers, as_json)


@handle_errors
def export_command(
    ctx: typer.Context,
    format_name: str = typer.Argument(..., metavar="FORMAT", help="relion5, imod, warp, ..."),
    project_dir: Path = ProjectOption,
    input: list[str] = typer.Option(None, "--input", "-i", help="NAME=RUN or NAME=RUN.OUTPUT"),
    name: str = typer.Option(None, "--name", "-n", help="run name"),
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    as_json: bool = JsonOption,
) -> None:
    """Export project data to another program's files: `tomoweave export relion5 -i ... --out DIR`."""
    protocol_class = _protocol_for("export", format_name)
    params = parse_protocol_args(protocol_class, list(ctx.args))
    project = Project.open(project_dir)
    execute_and_report(project, protocol_class.name, parse_inputs(input), params, name, executor,
                       workers, as_json)
