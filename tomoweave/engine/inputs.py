"""Resolving a run's inputs: references like "RUN" or "RUN.OUTPUT" to sets and items."""

from __future__ import annotations

from typing import Any

from tomoweave.engine.errors import InputError
from tomoweave.engine.protocol import Protocol
from tomoweave.model.particle_table import ParticleTable
from tomoweave.model.sets import SetState
from tomoweave.store.catalog import Catalog, RunRecord, SetRecord
from tomoweave.store.particle_tables import read_set


class RunItems(list):
    """The items one run gave to a ``multiple`` input, labelled with where they came from."""

    def __init__(self, items, run_name: str, output: str):
        super().__init__(items)
        self.run_name = run_name
        self.output = output


def find_run(catalog: Catalog, reference: str) -> RunRecord:
    """A run by name, by number (``7``) or by folder name (``0007-ctf.estimate``)."""
    run = catalog.run_by_name(reference)
    if run is not None:
        return run
    head = reference.split("-", 1)[0]
    if head.isdigit():
        try:
            return catalog.run(int(head))
        except KeyError:
            pass
    raise InputError(f"no run named '{reference}' in this project (see `tomoweave status`)")


def split_reference(catalog: Catalog, reference: str) -> tuple[RunRecord, str | None]:
    """Split "RUN.OUTPUT"; run names may themselves contain dots (``tiltseries.bin``)."""
    run = catalog.run_by_name(reference)
    if run is not None:
        return run, None
    if "." in reference:
        run_part, output = reference.rsplit(".", 1)
        try:
            return find_run(catalog, run_part), output
        except InputError:
            pass
    return find_run(catalog, reference), None


def resolve_set(catalog: Catalog, reference: str, input_name: str, item_type: type) -> SetRecord:
    run, output = split_reference(catalog, reference)
    sets = catalog.sets_of_run(run.id)
    if output is not None:
        chosen = [s for s in sets if s.output == output]
        if not chosen:
            names = ", ".join(s.output for s in sets) or "none"
            raise InputError(f"run '{run.name}' has no output '{output}' (its outputs: {names})")
    else:
        chosen = [s for s in sets if s.item_type == item_type.__name__]
        if len(chosen) != 1:
            what = "no output" if not chosen else "several outputs"
            raise InputError(f"input '{input_name}': run '{run.name}' has {what} of type "
                             f"{item_type.__name__}; name one as {run.name}.OUTPUT")
    if chosen[0].item_type != item_type.__name__:
        raise InputError(f"input '{input_name}' needs {item_type.__name__} items but "
                         f"{run.name}.{chosen[0].output} holds {chosen[0].item_type}")
    return chosen[0]


def resolve_inputs(catalog: Catalog, protocol: type[Protocol],
                   references: dict[str, Any]) -> dict[str, list[int]]:
    """Check references against the protocol's inputs; return input name -> set ids."""
    unknown = set(references) - set(protocol.inputs)
    if unknown:
        raise InputError(f"{protocol.name} has no input '{sorted(unknown)[0]}' "
                         f"(its inputs: {', '.join(protocol.inputs) or 'none'})")
    resolved: dict[str, list[int]] = {}
    for name, spec in protocol.inputs.items():
        given = references.get(name)
        if given in (None, "", []):
            if not spec.optional:
                raise InputError(f"{protocol.name} needs input '{name}' "
                                 f"({spec.item_type.__name__}): --input {name}=RUN")
            continue
        given_list = given if isinstance(given, list | tuple) else [given]
        if len(given_list) > 1 and not spec.multiple:
            raise InputError(f"input '{name}' takes one run, got {len(given_list)}")
        resolved[name] = [resolve_set(catalog, str(r), name, spec.item_type).id for r in given_list]
    return resolved


def load_input_items(catalog: Catalog, protocol: type[Protocol],
                     set_ids: dict[str, list[int]]) -> tuple[dict[str, Any], dict[str, int]]:
    """Items of each input (a list, or a list per run for ``multiple`` inputs; particles as
    one ParticleTable per set), and for the mapped input a map item name -> set id (lineage)."""
    loaded: dict[str, Any] = {}
    origin: dict[str, int] = {}
    mapped = protocol.mapped_input()
    for name, ids in set_ids.items():
        per_set = []
        for set_id in ids:
            source = catalog.set_by_id(set_id)
            items = read_set(catalog, source)
            run_name = catalog.run(source.run_id).name
            if isinstance(items, ParticleTable):
                items.run_name, items.output = run_name, source.output
            else:
                items = RunItems(items, run_name, source.output)
            per_set.append(items)
            if name == mapped:
                keys = items.names.tolist() if isinstance(items, ParticleTable) else \
                    [i.name for i in items]
                origin.update(dict.fromkeys(keys, set_id))
        spec = protocol.inputs[name]
        if spec.multiple:
            loaded[name] = per_set
        elif per_set and all(isinstance(items, ParticleTable) for items in per_set):
            loaded[name] = ParticleTable.concat(per_set)
        else:
            loaded[name] = [i for items in per_set for i in items]
    return loaded, origin


def inputs_open(catalog: Catalog, set_ids: dict[str, list[int]]) -> bool:
    """True while any input set may still grow (streaming)."""
    return any(catalog.set_by_id(i).state == SetState.OPEN for ids in set_ids.values() for i in ids)


def inputs_signature(catalog: Catalog, set_ids: dict[str, list[int]]) -> tuple:
    """Changes when an input set gains, loses or replaces items or changes state: a cheap test
    of whether planning again can find new work."""
    ids = sorted({i for group in set_ids.values() for i in group})
    return catalog.sets_signature(ids)
