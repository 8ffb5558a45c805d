"""The protocol registry: built-in modules under tomoweave.protocols / tomoweave.plugins, and
external packages through the entry-point group ``tomoweave.protocols``.

A protocol that calls external programs lists them (``Protocol.programs``); it is *offered*
(``protocols()``, ``tomoweave protocols``, the web GUI) only where they are found, and running
it where one is missing fails with one line saying how to install it. ``all_protocols()`` and
``installed_protocols()`` include it anyway (``tomoweave plugins``, the reference docs).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from tomoweave.engine.errors import TomoweaveError
from tomoweave.engine.programs import MissingProgramError, Program
from tomoweave.engine.protocol import Protocol

ENTRY_POINT_GROUP = "tomoweave.protocols"
_BUILTIN_PACKAGES = ("tomoweave.protocols", "tomoweave.plugins")
log = logging.getLogger(__name__)
_extra: dict[str, type[Protocol]] = {}
_import_failures: dict[str, str] = {}


def all_protocols() -> dict[str, type[Protocol]]:
    """Every registered protocol by name, whether or not its programs are installed here."""
    return dict(sorted({**_discover(), **_extra}.items()))


def protocols(project_root: str | Path | None = None) -> dict[str, type[Protocol]]:
    """The protocols that can run here: those whose external programs are all found."""
    return {name: cls for name, cls in all_protocols().items()
            if not cls.missing_programs(project_root)}


def installed_protocols() -> dict[str, type[Protocol]]:
    """Protocols from tomoweave and installed plugin packages (not those added at run time)."""
    return dict(sorted(_discover().items()))


def programs() -> dict[str, Program]:
    """Every external program a known protocol calls, by name."""
    found: dict[str, Program] = {}
    for protocol_class in all_protocols().values():
        for program in protocol_class.programs:
            found.setdefault(program.name, program)
    return dict(sorted(found.items(), key=lambda item: (item[1].family.lower(), item[0])))


def protocols_using(program: Program) -> list[str]:
    return [name for name, cls in all_protocols().items() if program in cls.programs]


def refresh() -> None:
    """Look for protocols and item types again (after installing a plugin package)."""
    from tomoweave.model.item_registry import refresh as refresh_item_types

    _discover.cache_clear()
    _import_failures.clear()
    refresh_item_types()


@lru_cache(maxsize=1)
def _discover() -> dict[str, type[Protocol]]:
    found: dict[str, type[Protocol]] = {}
    for package_name in _BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            try:
                module = importlib.import_module(info.name)
            except Exception as error:  # one broken module must not hide every other protocol
                log.warning("could not import %s: %s: %s", info.name, type(error).__name__, error)
                _import_failures[info.name] = f"{type(error).__name__}: {error}"
                continue
            _collect(module, found)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as error:  # a broken plugin must not break tomoweave
            log.warning("could not load protocol entry point %s: %s", entry.name, error)
            _import_failures[entry.value] = f"{type(error).__name__}: {error}"
            continue
        if inspect.isclass(loaded) and issubclass(loaded, Protocol):
            found[loaded.name] = loaded
        elif inspect.ismodule(loaded):
            _collect(loaded, found)
    return dict(sorted(found.items()))


def _collect(module, found: dict[str, type[Protocol]]) -> None:
    for _, value in inspect.getmembers(module, inspect.isclass):
        if issubclass(value, Protocol) and value is not Protocol and value.name:
            found[value.name] = value


def register_protocol(protocol_class: type[Protocol]) -> type[Protocol]:
    """Add a protocol at run time (notebooks, tests); packages use the entry-point group.
    Worker processes find it by importing its module, which must be importable there."""
    _extra[protocol_class.name] = protocol_class
    return protocol_class


def get_protocol(name: str, module: str | None = None, *, project_root: str | Path | None = None,
                 check_programs: bool = True) -> type[Protocol]:
    """The protocol called ``name``; ``module`` is imported first when it is not registered
    here (a worker process running a protocol its scheduler registered at run time). Unless
    ``check_programs`` is False, raises :class:`MissingProgramError` (one line: what is missing,
    how to install it) when an external program it calls is not found here."""
    known = all_protocols()
    if name not in known and module:
        found: dict[str, type[Protocol]] = {}
        _collect(importlib.import_module(module), found)
        _extra.update(found)
        known = all_protocols()
    if name not in known:
        close = [n for n in known if name.split(".")[0] in n]
        hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
        if _import_failures:
            module, error = next(iter(_import_failures.items()))
            hint += f" ({module} could not be imported: {error})"
        raise TomoweaveError(f"unknown protocol '{name}'{hint} (list them with `tomoweave protocols`)")
    protocol_class = known[name]
    if check_programs:
        missing = protocol_class.missing_programs(project_root)
        if missing:
            raise MissingProgramError(f"{name} cannot run here: {missing[0].missing_message()}")
    return protocol_class
