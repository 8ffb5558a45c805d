"""The protocol registry: built-in modules under tomoweave.protocols / tomoweave.plugins, and
external packages through the entry-point group ``tomoweave.protocols``."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points

from tomoweave.engine.errors import TomoweaveError
from tomoweave.engine.protocol import Protocol

ENTRY_POINT_GROUP = "tomoweave.protocols"
_BUILTIN_PACKAGES = ("tomoweave.protocols", "tomoweave.plugins")
log = logging.getLogger(__name__)
_extra: dict[str, type[Protocol]] = {}
_import_failures: dict[str, str] = {}


def protocols() -> dict[str, type[Protocol]]:
    """All registered protocols by name."""
    return dict(sorted({**_discover(), **_extra}.items()))


def installed_protocols() -> dict[str, type[Protocol]]:
    """Protocols from tomoweave and installed plugin packages (not those added at run time)."""
    return dict(sorted(_discover().items()))


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


def register_protocol(protocol_class: type[Protocol]) -> None:
    """Add a protocol at run time (notebooks, tests); packages use the entry-point group."""
    _extra[protocol_class.name] = protocol_class


def get_protocol(name: str, module: str | None = None) -> type[Protocol]:
    """The protocol called ``name``; ``module`` is imported first when it is not registered
    here (a worker process running a protocol its scheduler registered at run time)."""
    known = protocols()
    if name not in known and module:
        found: dict[str, type[Protocol]] = {}
        _collect(importlib.import_module(module), found)
        _extra.update(found)
        known = protocols()
    if name not in known:
        close = [n for n in known if name.split(".")[0] in n]
        hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
        if _import_failures:
            module, error = next(iter(_import_failures.items()))
            hint += f" ({module} could not be imported: {error})"
        raise TomoweaveError(f"unknown protocol '{name}'{hint} (list them with `tomoweave protocols`)")
    return known[name]
