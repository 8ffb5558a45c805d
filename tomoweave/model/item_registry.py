"""Item types from plugin packages: the entry-point group ``tomoweave.item_types`` and run-time
registration.

A package declares its item types (pydantic models with a ``name`` field, usually subclasses of
:class:`tomoweave.model.Item`) in its ``pyproject.toml``::

    [project.entry-points."tomoweave.item_types"]
    mytool = "mytool_tomoweave.items"      # a module (every Item subclass in it) or one class

Sets of those types are stored, shown and passed between runs like tomoweave's own. A type
registered at run time (``register_item_type``) travels to worker processes by reference
(``module:QualifiedName``), so its module must be importable there.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from functools import lru_cache
from importlib.metadata import entry_points

from pydantic import BaseModel

ENTRY_POINT_GROUP = "tomoweave.item_types"
log = logging.getLogger(__name__)
_registered: dict[str, type[BaseModel]] = {}


def _is_item_type(value) -> bool:
    return (inspect.isclass(value) and issubclass(value, BaseModel)
            and "name" in getattr(value, "model_fields", {}))


def register_item_type(item_class: type[BaseModel]) -> type[BaseModel]:
    """Make ``item_class`` storable in sets (notebooks, tests); packages use the entry point.
    Returns the class, so it can decorate one."""
    if not _is_item_type(item_class):
        raise TypeError(f"{item_class!r}: an item type is a pydantic model with a 'name' field")
    _registered[item_class.__name__] = item_class
    return item_class


@lru_cache(maxsize=1)
def _from_entry_points() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as error:  # a broken plugin must not break tomoweave
            log.warning("could not load item-type entry point %s: %s", entry.name, error)
            continue
        members = [loaded] if inspect.isclass(loaded) else [
            value for _, value in inspect.getmembers(loaded, inspect.isclass)
            if value.__module__ == loaded.__name__]
        for value in members:
            if _is_item_type(value):
                found[value.__name__] = value
    return found


def plugin_item_types(builtin: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """Item types of plugin packages and run-time registrations (names of tomoweave's own
    types cannot be taken over)."""
    extra = {**_from_entry_points(), **_registered}
    for name in set(extra) & set(builtin):
        if extra[name] is not builtin[name]:
            log.warning("item type %s of %s ignored: tomoweave has a type of that name",
                        name, extra[name].__module__)
        del extra[name]
    return extra


def refresh() -> None:
    """Forget what entry points were found (after installing a plugin in a running process)."""
    _from_entry_points.cache_clear()


def item_type_reference(item_class: type[BaseModel]) -> str:
    """How a worker process finds ``item_class``: its name when every process knows it (built in
    or from an entry point), else ``module:QualifiedName``."""
    from tomoweave.model.items import item_types

    if item_types().get(item_class.__name__) is item_class and item_class.__name__ not in _registered:
        return item_class.__name__
    return f"{item_class.__module__}:{item_class.__qualname__}"


def resolve_item_type(reference: str) -> type[BaseModel]:
    """The class named by :func:`item_type_reference` (importing its module if needed)."""
    from tomoweave.model.items import item_types

    name, _, qualified = reference.partition(":")
    known = item_types()
    if not qualified:
        if name not in known:
            raise KeyError(f"unknown item type '{name}' (is the plugin that defines it installed?)")
        return known[name]
    value = importlib.import_module(name)
    for part in qualified.split("."):
        value = getattr(value, part)
    return register_item_type(value)
