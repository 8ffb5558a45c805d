"""Particle sets as columns: one array per field of ``Particle``, vectorised access.

A set of 10⁵–10⁶ particles is a :class:`ParticleTable`, not a list of objects: positions,
rotations, scores, classes and half sets are numpy arrays (``table.positions_a`` is (N, 3) Å,
``table.rotations`` (N, 3, 3)). It is also a read-only sequence of :class:`Particle`
(``len``, ``table[i]``, iteration), so code written for lists of particles keeps working;
objects are built only when asked for. Selections (``table[mask]``, ``table.take(indices)``,
``table.by_tomogram()``) return tables.

The columns follow the fields of ``Particle`` (fields added later become columns by
themselves): text fields are object arrays of ``str``; numbers are float64, with NaN for None
(integers too: exact up to 2⁵³); fixed-length tuples are (N, k) float64 with NaN rows for
None; ``rotation`` is (N, 3, 3); booleans are bool; anything else is an object array.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from tomoweave.model.items import Particle

ROTATION = "rotation"
ORTHONORMAL_TOLERANCE = 1e-4  # as Particle's validator


def _column_kinds() -> dict[str, tuple[str, int, bool]]:
    """field name -> (kind, width, nullable) for every field of Particle."""
    kinds = {}
    for name, info in Particle.model_fields.items():
        annotation = info.annotation
        nullable = False
        if typing.get_origin(annotation) in (types.UnionType, typing.Union):
            arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = len(arguments) < len(typing.get_args(annotation))
            annotation = arguments[0] if len(arguments) == 1 else Any
        origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
        if name == ROTATION:
            kinds[name] = ("matrix", 3, nullable)
        elif annotation is str:
            kinds[name] = ("str", 1, nullable)
        elif annotation is bool:
            kinds[name] = ("bool", 1, nullable)
        elif annotation in (int, float):
            kinds[name] = ("int" if annotation is int else "float", 1, nullable)
        elif origin is tuple and arguments and all(a in (int, float) for a in arguments) \
                and Ellipsis not in arguments:
            kinds[name] = ("vector", len(arguments), nullable)
        else:
            kinds[name] = ("object", 1, nullable)
    return kinds


KINDS = _column_kinds()


class ParticleTableError(ValueError):
    """Columns that do not make a valid particle table (names the column and the problem)."""


class ParticleTable(Sequence):
    """Particles as columns; see the module docstring.

    Parameters
    ----------
    columns : dict of str to array
        One array per field of ``Particle`` (missing fields get their default): ``name`` and
        ``tomogram`` (N,) str, ``position_a`` (N, 3) Å from the tomogram centre, ``rotation``
        (N, 3, 3) active rotations, ``score``/``class_id``/``half_set``… (N,) with NaN for None.
    validate : bool
        Check shapes, finiteness of positions and orthonormality of rotations (vectorised).
    """

    def __init__(self, columns: dict[str, Any], *, validate: bool = True):
        unknown = set(columns) - set(KINDS)
        if unknown:
            raise ParticleTableError(f"particle table: no Particle field "
                                     f"'{sorted(unknown)[0]}' (fields: {', '.join(KINDS)})")
        if "name" not in columns:
            raise ParticleTableError("particle table: column 'name' is required")
        count = len(columns["name"])
        self._columns = {name: _as_column(name, columns.get(name), count) for name in KINDS}
        self.run_name: str | None = None  # set for the sets of a ``multiple`` input
        self.output: str | None = None
        if validate:
            self._validate()

    # building -------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> ParticleTable:
        return cls({"name": np.array([], dtype=object)}, validate=False)

    @classmethod
    def from_particles(cls, particles: Iterable[Particle]) -> ParticleTable:
        """A table of particle objects (a table is returned as it is)."""
        if isinstance(particles, ParticleTable):
            return particles
        particles = list(particles)
        columns = {name: [getattr(p, name) for p in particles] for name in KINDS}
        return cls(columns, validate=False)  # the objects were validated already

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> ParticleTable:
        """A table of plain dicts (``Particle.model_dump`` output), validated."""
        return cls.from_particles(Particle.model_validate(r) for r in records)

    @classmethod
    def concat(cls, tables: Iterable[ParticleTable]) -> ParticleTable:
        tables = [as_particle_table(t) for t in tables]
        if not tables:
            return cls.empty()
        if len(tables) == 1:
            return tables[0]
        columns = {name: np.concatenate([t._columns[name] for t in tables]) for name in KINDS}
        return cls(columns, validate=False)

    def with_columns(self, **updates: Any) -> ParticleTable:
        """A copy with some columns replaced (same length), e.g. ``position_a=merged``."""
        columns = dict(self._columns)
        columns.update(updates)
        return ParticleTable(columns, validate=bool(set(updates) & {"position_a", ROTATION}))

    def take(self, selection: Any) -> ParticleTable:
        """The rows at ``selection`` (indices or a boolean mask), in that order."""
        index = np.asarray(selection)
        if index.dtype == bool and len(index) != len(self):
            raise ParticleTableError(f"mask of {len(index)} values for {len(self)} particles")
        table = ParticleTable({n: c[index] for n, c in self._columns.items()}, validate=False)
        table.run_name, table.output = self.run_name, self.output
        return table

    # columns --------------------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        """The array of field ``name`` (read-only view)."""
        if name not in self._columns:
            raise KeyError(f"particles have no field '{name}' (fields: {', '.join(KINDS)})")
        view = self._columns[name].view()
        view.flags.writeable = False
        return view

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {name: self.column(name) for name in self._columns}

    names = property(lambda self: self.column("name"), doc="(N,) str")
    tomograms = property(lambda self: self.column("tomogram"), doc="(N,) str")
    positions_a = property(lambda self: self.column("position_a"), doc="(N, 3) Å")
    rotations = property(lambda self: self.column(ROTATION), doc="(N, 3, 3)")
    scores = property(lambda self: self.column("score"), doc="(N,) NaN when None")
    class_ids = property(lambda self: self.column("class_id"), doc="(N,) NaN when None")
    membrane_ids = property(lambda self: self.column("membrane_id"), doc="(N,) NaN when None")
    normals = property(lambda self: self.column("normal"), doc="(N, 3), NaN rows when None")

    @property
    def half_sets(self) -> np.ndarray:
        """(N,) 1 or 2, NaN when None (if Particle has half sets)."""
        return self.column("half_set")

    def by_tomogram(self) -> dict[str, ParticleTable]:
        """One table per tomogram, tomograms in order of first appearance, rows in order."""
        if not len(self):
            return {}
        names, first, inverse = np.unique(self._columns["tomogram"].astype(str),
                                          return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(names)))
        groups = np.split(order, bounds[:-1])
        return {str(names[g]): self.take(groups[g]) for g in np.argsort(first)}

    def tomogram_names(self) -> list[str]:
        return list(dict.fromkeys(self._columns["tomogram"].tolist()))

    # rows -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._columns["name"])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            position = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"particle {index} of {len(self)}")
            return next(iter(self._particles(position, position + 1)))
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        return self.take(index)

    def __iter__(self) -> Iterator[Particle]:
        return self._particles(0, len(self))

    def _particles(self, start: int, stop: int, chunk: int = 4096) -> Iterator[Particle]:
        for low in range(start, stop, chunk):
            for record in self._python_rows(low, min(stop, low + chunk)):
                yield Particle.model_construct(**record)

    def _python_rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        lists = {name: _to_python(KINDS[name], column[start:stop])
                 for name, column in self._columns.items()}
        return [dict(zip(lists, values, strict=True)) for values in zip(*lists.values(), strict=True)]

    def records(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows ``offset`` … ``offset + limit`` as JSON-ready dicts (what ``show --json`` prints,
        the same as ``Particle.to_record``), without building particle objects."""
        stop = len(self) if limit is None else min(len(self), offset + max(0, limit))
        rows = self._python_rows(max(0, offset), stop)
        for row in rows:
            for name, value in row.items():
                if isinstance(value, tuple):
                    row[name] = list(value)
        return rows

    def content_digest(self) -> str:
        """SHA-256 of every column: equal tables have equal digests (resume journal)."""
        cached = self.__dict__.get("_digest")
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        for name, column in self._columns.items():
            digest.update(name.encode())
            if column.dtype == object:
                digest.update(repr(column.tolist()).encode())
            else:
                digest.update(np.ascontiguousarray(column).tobytes())
        self._digest = digest.hexdigest()  # columns are never changed in place
        return self._digest

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ParticleTable):
            return self.content_digest() == other.content_digest()
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # mutable-looking container semantics, like list

    def __repr__(self) -> str:
        tomograms = self.tomogram_names()
        return f"ParticleTable({len(self)} particles in {len(tomograms)} tomograms)"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _validate(self) -> None:
        positions = self._columns["position_a"]
        if not np.isfinite(positions).all():
            row = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
            raise ParticleTableError(f"particle {self._columns['name'][row]}: position_a is "
                                     "not finite")
        rotations = self._columns[ROTATION]
        if len(rotations):
            error = np.abs(rotations @ rotations.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
            bad = np.flatnonzero(~(error <= ORTHONORMAL_TOLERANCE))
            if len(bad):
                raise ParticleTableError(f"particle {self._columns['name'][bad[0]]}: rotation "
                                         "must be a 3×3 orthonormal matrix")
        for name in ("name", "tomogram"):
            column = self._columns[name]
            if len(column) and not all(isinstance(v, str) for v in column.tolist()):
                raise ParticleTableError(f"particle table: column '{name}' must hold text")


def as_particle_table(particles: Any) -> ParticleTable:
    """A ParticleTable of a table, a list of ``Particle`` or a list of dicts."""
    if isinstance(particles, ParticleTable):
        return particles
    particles = list(particles or [])
    if particles and isinstance(particles[0], dict):
        return ParticleTable.from_records(particles)
    return ParticleTable.from_particles(particles)


def _default(name: str) -> Any:
    field = Particle.model_fields[name]
    return field.default_factory() if field.default_factory is not None else field.default


def _as_column(name: str, values: Any, count: int) -> np.ndarray:
    kind, width, _ = KINDS[name]
    if values is None:
        default = _default(name)
        if default is ... or (default is None and kind in ("str", "bool")):
            raise ParticleTableError(f"particle table: column '{name}' is required")
        values = [default] * count
    if len(values) != count:
        raise ParticleTableError(f"particle table: column '{name}' has {len(values)} values "
                                 f"for {count} particles")
    if kind in ("str", "object"):
        column = np.empty(count, dtype=object)
        column[:] = list(values) if not isinstance(values, np.ndarray) else values
        return column
    if kind == "bool":
        return np.asarray(values, dtype=bool).reshape(count)
    if kind in ("int", "float"):
        array = np.asarray(values, dtype=object if _has_none(values) else None)
        if array.dtype == object:
            array = np.array([np.nan if v is None else v for v in array.tolist()], dtype=float)
        return array.astype(np.float64, copy=False).reshape(count)
    shape = (count, 3, 3) if kind == "matrix" else (count, width)
    if _has_none(values):
        filler = np.full(shape[1:], np.nan)
        values = [filler if v is None else v for v in values]
    try:
        return np.asarray(values, dtype=np.float64).reshape(shape)
    except ValueError:
        raise ParticleTableError(f"particle table: column '{name}' must have shape "
                                 f"{shape[1:]} per particle") from None


def _has_none(values: Any) -> bool:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return False
    return any(v is None for v in values)


def _to_python(kind_spec: tuple[str, int, bool], column: np.ndarray) -> list[Any]:
    kind, width, nullable = kind_spec
    if kind in ("str", "object", "bool"):
        return column.tolist()
    if kind in ("int", "float"):
        values = column.tolist()
        missing = np.isnan(column)
        cast = int if kind == "int" else float
        return [None if m else cast(v) for v, m in zip(values, missing.tolist(), strict=True)] \
            if missing.any() or kind == "int" else values
    rows = column.tolist()
    missing = np.isnan(column.reshape(len(column), -1)).any(axis=1).tolist()
    if kind == "matrix":
        return [None if m and nullable else r for r, m in zip(rows, missing, strict=True)]
    return [None if m else tuple(r) for r, m in zip(rows, missing, strict=True)]
