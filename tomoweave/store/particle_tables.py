"""Particle sets on disk: one Parquet table per task of the run that made them.

A task that outputs particles writes them as one Parquet file,
``runs/NNNN-protocol/outputs/tables/OUTPUT/TASK-KEYHASH-DIGEST.parquet`` (atomically), and the
catalog holds one row for it (item type ``ParticleTable``: its path, particle count and
tomograms) instead of one row per particle. A set's particles are any one-row particles an
earlier tomoweave stored, then its tables in the order of their task keys: the same order
whatever executor ran the tasks and in whatever order they ended.

Columns are those of :class:`tomoweave.model.ParticleTable`: text as strings, numbers as
float64 (NaN for None), vectors and rotations as fixed-size lists; other fields as JSON text.
Any Parquet reader (pandas, polars, DuckDB) reads the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.model.particle_table import KINDS, ParticleTable, ParticleTableError

TABLE_ITEM_TYPE = "ParticleTable"  # item_type of a catalog row that points at a table file
TABLE_KEY_PREFIX = "table:"
TABLES_FOLDER = "tables"
COLUMNAR_ITEM_TYPES = ("Particle",)  # sets of these item types are stored as tables


class ParticleTableFileError(OSError):
    """A particle table file that cannot be read (names the file)."""


def is_columnar(item_type: str) -> bool:
    return item_type in COLUMNAR_ITEM_TYPES


def table_file_name(task_key: str, digest: str) -> str:
    """``TASK-KEYHASH-DIGEST.parquet``: readable, unique per task key, new for each digest."""
    return f"{task_file_prefix(task_key)}{digest[:12] or 'nodigest'}.parquet"


def task_file_prefix(task_key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task_key)[:80] or "task"
    return f"{safe}-{hashlib.sha256(task_key.encode()).hexdigest()[:8]}-"


def write_particle_table(path: str | Path, table: ParticleTable) -> Path:
    """Write ``table`` to ``path`` (Parquet) through a temporary name and a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, names = [], []
    for name, column in table.columns.items():
        kind, width, _ = KINDS[name]
        if kind == "str":
            arrays.append(pa.array(column.tolist(), type=pa.string()))
        elif kind == "object":
            arrays.append(pa.array([json.dumps(v) for v in column.tolist()], type=pa.string()))
        elif kind in ("vector", "matrix"):
            size = 9 if kind == "matrix" else width
            flat = pa.array(np.ascontiguousarray(column, dtype=np.float64).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, size))
        else:
            arrays.append(pa.array(column))
        names.append(name)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(pa.Table.from_arrays(arrays, names=names), temporary, compression="zstd")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def read_particle_table(path: str | Path) -> ParticleTable:
    """The table in ``path``; columns the file lacks (fields added since) get their default."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        stored = pq.read_table(path)
    except (OSError, ValueError) as error:
        raise ParticleTableFileError(f"{path}: cannot read the particle table: {error}") from None
    columns: dict[str, Any] = {}
    count = stored.num_rows
    for name in stored.column_names:
        if name not in KINDS:
            continue  # a field removed since the file was written
        kind, width, _ = KINDS[name]
        data = stored.column(name).combine_chunks()
        if kind in ("vector", "matrix"):
            shape = (count, 3, 3) if kind == "matrix" else (count, width)
            columns[name] = data.flatten().to_numpy(zero_copy_only=False).reshape(shape)
        elif kind == "object":
            columns[name] = [json.loads(v) for v in data.to_pylist()]
        elif kind == "str":
            column = np.empty(count, dtype=object)
            column[:] = data.to_pylist()
            columns[name] = column
        else:
            columns[name] = data.to_numpy(zero_copy_only=False)
    try:
        return ParticleTable(columns, validate=False)
    except ParticleTableError as error:
        raise ParticleTableFileError(f"{path}: {error}") from None


def table_record(key: str, path_relative: str, table: ParticleTable) -> dict[str, Any]:
    """The catalog row's data for a table file: where it is and what it holds."""
    counts = {name: int(n) for name, n in zip(*np.unique(table.tomograms.astype(str),
                                                          return_counts=True), strict=True)}
    return {"path": path_relative, "count": len(table), "tomograms": counts}


def set_particles(catalog, set_id: int) -> ParticleTable:
    """Every particle of a columnar set, as one table (see the module docstring for the order)."""
    from tomoweave.model import Particle

    root = Path(catalog.path).resolve().parent
    parts: list[ParticleTable] = []
    loose: list[Any] = []  # one-row particles of catalogs written before tables
    for record in _ordered(catalog.items(set_id)):
        if record.item_type == TABLE_ITEM_TYPE:
            parts.append(read_particle_table(_resolve(root, record.data["path"])))
        else:
            loose.append(Particle.model_validate(record.data))
    return ParticleTable.concat([ParticleTable.from_particles(loose), *parts] if loose else parts)


def _ordered(records: list) -> list:
    """One-row particles first (in their order), then tables by task key."""
    return sorted(records, key=lambda r: (r.item_type == TABLE_ITEM_TYPE,
                                          r.key if r.item_type == TABLE_ITEM_TYPE else ""))


def tomogram_particles(catalog, set_id: int, tomogram: str) -> ParticleTable:
    """The particles of one tomogram in a columnar set (tables without it are not read)."""
    from tomoweave.model import Particle

    root = Path(catalog.path).resolve().parent
    parts: list[ParticleTable] = []
    for record in _ordered(catalog.items(set_id)):
        if record.item_type == TABLE_ITEM_TYPE:
            if tomogram in record.data.get("tomograms", {tomogram: 1}):
                table = read_particle_table(_resolve(root, record.data["path"]))
                parts.append(table.take(table.tomograms == tomogram))
        elif record.data.get("tomogram") == tomogram:
            parts.append(ParticleTable.from_particles([Particle.model_validate(record.data)]))
    return ParticleTable.concat(parts)


def remove_stale_tables(folder: Path, task_key: str, kept: set[str]) -> None:
    """Delete the tables an earlier attempt of ``task_key`` wrote, except those in ``kept``."""
    if not folder.is_dir():
        return
    prefix = task_file_prefix(task_key)
    for path in folder.glob(f"{prefix}*.parquet"):
        if path.name not in kept:
            path.unlink(missing_ok=True)


def _resolve(root: Path, stored: str) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else root / path


def read_set(catalog, set_record) -> Any:
    """The items of a set: a ParticleTable for columnar item types, else model objects."""
    if is_columnar(set_record.item_type):
        return set_particles(catalog, set_record.id)
    from tomoweave.model import item_types

    types = item_types()
    return [types[r.item_type].model_validate(r.data) for r in catalog.items(set_record.id)]


def particle_page(catalog, set_id: int, offset: int = 0,
                  limit: int | None = None) -> ParticleTable:
    """Particles ``offset`` … ``offset + limit`` of a columnar set (only their tables read)."""
    return _particle_page(catalog, set_id, offset, limit)


def set_page(catalog, set_record, offset: int = 0, limit: int | None = None) -> list[dict]:
    """JSON-ready records of items ``offset`` … ``offset + limit`` of a set (``show --json``);
    particle tables are read as columns, no object per particle is built."""
    if is_columnar(set_record.item_type):
        return _particle_page(catalog, set_record.id, offset, limit).records()
    from tomoweave.model import item_types

    types = item_types()
    records = catalog.items(set_record.id)
    stop = None if limit is None else offset + limit
    return [types[r.item_type].model_validate(r.data).to_record() for r in records[offset:stop]]


def _particle_page(catalog, set_id: int, offset: int, limit: int | None) -> ParticleTable:
    """Rows offset … offset + limit of a columnar set, reading only the tables they are in
    (each catalog row knows its table's particle count)."""
    from tomoweave.model import Particle

    root = Path(catalog.path).resolve().parent
    stop = None if limit is None else offset + limit
    parts, start = [], 0
    for record in _ordered(catalog.items(set_id)):
        count = record.data["count"] if record.item_type == TABLE_ITEM_TYPE else 1
        end = start + count
        if end > offset and (stop is None or start < stop):
            table = (read_particle_table(_resolve(root, record.data["path"]))
                     if record.item_type == TABLE_ITEM_TYPE else
                     ParticleTable.from_particles([Particle.model_validate(record.data)]))
            low = max(0, offset - start)
            high = count if stop is None else min(count, stop - start)
            parts.append(table[low:high])
        start = end
        if stop is not None and start >= stop:
            break
    return ParticleTable.concat(parts)
