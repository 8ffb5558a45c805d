"""The command line (Typer). Every module ``cmd_*.py`` in this package adds its commands."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import typer

app = typer.Typer(
    name="tomoweave",
    help="Cryo-electron tomography in one traceable project. Start with `tomoweave demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            try:
                module = importlib.import_module(f"{__name__}.{info.name}")
            except Exception as error:  # a broken command module must not break the others
                logging.getLogger(__name__).warning("CLI module %s not loaded: %s", info.name, error)
                continue
            module.register(app)


_register_commands()
