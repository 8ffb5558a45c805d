"""Dynamo tables (.tbl, via ``dynamotable``) and .em volumes.

Table positions are columns x, y, z (24-26) plus the shifts dx, dy, dz (4-6), in pixels of the
tomogram the table refers to, counted MATLAB-style from 1: voxel 1 is the first voxel, so the
centre voxel ``N // 2`` (0-based) is ``N // 2 + 1`` in Dynamo. Angles tdrot, tilt, narot (7-9)
go through ``geometry.dynamo_zxz_to_matrix``. Column 20 ``tomo`` is the tomogram index; a
``.doc`` table map (index -> tomogram file) gives the names, else the index is the name.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import dynamotable
import numpy as np
import pandas as pd

from tomoweave.formats import FormatWarning
from tomoweave.geometry import dynamo_zxz_to_matrix, matrices_to_dynamo_zxz
from tomoweave.model import Particle, as_particle_table

_POSITION = ("x", "y", "z")
_SHIFT = ("dx", "dy", "dz")
_ANGLES = ("tdrot", "tilt", "narot")
_MIN_COLUMNS = 26  # up to z


class DynamoFormatError(ValueError):
    """A malformed Dynamo file; names the file, line/column and what was expected."""


def read_dynamo_table(
    path: str | Path,
    pixel_size_a: float | None,
    tomo_size_xyz: tuple[int, int, int] | Mapping[str, tuple[int, int, int]],
    table_map: str | Path | None = None,
) -> list[Particle]:
    """Particles of a Dynamo table; ``pixel_size_a`` defaults to the apix column (36)."""
    path = Path(path)
    _check_rows(path)
    table = dynamotable.read(str(path))
    # only the columns read (checked real above); the others may be complex or text
    table = table[[c for c in _USED_COLUMNS.values() if c in table.columns]].astype(float)
    names = _tomogram_names(table, table_map)
    pixel = pixel_size_a or (float(table["apix"].iloc[0]) if "apix" in table.columns else 0.0)
    if not pixel or pixel <= 0:
        raise DynamoFormatError(f"{path.name}: column 36 (apix) is 0 or absent; give the pixel "
                                f"size of the table's tomograms (--pixel-size)")
    particles = []
    for row in range(len(table)):
        values = table.iloc[row]
        name = names[row]
        size = np.asarray(_size_for(tomo_size_xyz, name, path))
        index0 = np.array([values[c] + values[d] for c, d in zip(_POSITION, _SHIFT, strict=True)])
        centred = (index0 - 1.0 - size // 2) * pixel
        rotation = dynamo_zxz_to_matrix(*(float(values[a]) for a in _ANGLES))
        particles.append(Particle(
            name=f"{name}/{int(values['tag'])}", tomogram=name,
            position_a=tuple(float(v) for v in centred), rotation=rotation.tolist(),
            score=float(values["cc"]) if "cc" in table.columns else None,
            class_id=int(values["class"]) if "class" in table.columns else None))
    return particles


def write_dynamo_table(
    path: str | Path,
    particles: Sequence[Particle],
    pixel_size_a: float,
    tomo_size_xyz: tuple[int, int, int] | Mapping[str, tuple[int, int, int]],
) -> dict[int, str]:
    """Write a Dynamo table (shifts 0, positions in pixels from 1) and its .doc tomogram map.

    Returns the map of tomogram index (column 20) to tomogram name.
    """
    path = Path(path)
    particles = as_particle_table(particles)
    names = particles.tomogram_names()
    index_of = {name: i + 1 for i, name in enumerate(names)}
    tomo = pd.Series(particles.tomograms).map(index_of).to_numpy(dtype=int)
    sizes = np.array([[0, 0, 0]] + [list(_size_for(tomo_size_xyz, n, path)) for n in names])
    position = particles.positions_a / pixel_size_a + sizes[tomo] // 2 + 1.0
    angles = matrices_to_dynamo_zxz(particles.rotations).reshape(-1, 3)
    scores, classes = particles.scores, particles.class_ids
    count = len(particles)
    columns = {"tag": np.arange(1, count + 1), "aligned_value": np.ones(count, dtype=int),
               "tdrot": angles[:, 0], "tilt": angles[:, 1], "narot": angles[:, 2],
               "cc": np.where(np.isfinite(scores), scores, 0.0), "tomo": tomo,
               "class": np.where(np.isfinite(classes) & (classes != 0), classes, 1).astype(int),
               "x": position[:, 0], "y": position[:, 1], "z": position[:, 2],
               "apix": np.full(count, float(pixel_size_a))}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.tbl")
    dynamotable.write(pd.DataFrame(columns), str(temporary))
    temporary.replace(path)
    doc = path.with_suffix(".doc")
    doc.write_text("".join(f"{index_of[n]} {n}\n" for n in names), encoding="utf-8")
    return {i: n for n, i in index_of.items()}


# 1-based columns tomoweave reads: tag, shifts, angles, cc, tomo, class, x y z, apix
_USED_COLUMNS = {1: "tag", 4: "dx", 5: "dy", 6: "dz", 7: "tdrot", 8: "tilt", 9: "narot",
                 10: "cc", 20: "tomo", 22: "class", 24: "x", 25: "y", 26: "z", 36: "apix"}


def _check_rows(path: Path) -> None:
    """Every row needs at least 26 columns and a number in each column tomoweave uses (named
    with its line); other columns may hold anything MATLAB writes (Dynamo's daxis column can be
    complex, ``0+1.2074e-06i``): one ``FormatWarning`` per file says what was ignored."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise DynamoFormatError(f"{path.name}: cannot read: {error.strerror}") from error
    rows, ignored, first = 0, 0, None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        rows += 1
        if len(fields) < _MIN_COLUMNS:
            raise DynamoFormatError(f"{path.name}: line {number}: expected at least "
                                    f"{_MIN_COLUMNS} columns (up to x y z), got {len(fields)}")
        for column, value in enumerate(fields, start=1):
            try:
                float(value)
            except ValueError as error:
                if column in _USED_COLUMNS:
                    raise DynamoFormatError(
                        f"{path.name}: line {number}, column {column} "
                        f"({_USED_COLUMNS[column]}): expected a number, got {value!r}") from error
                ignored += 1
                first = first or (number, column, value)
    if not rows:
        raise DynamoFormatError(f"{path.name}: empty table")
    if ignored:
        number, column, value = first
        warnings.warn(FormatWarning(
            f"{path.name}: {ignored} value(s) that are not real numbers in columns tomoweave "
            f"does not use, ignored (first: line {number}, column {column}, {value!r})"),
            stacklevel=3)


def _tomogram_names(table: pd.DataFrame, table_map: str | Path | None) -> list[str]:
    indices = table["tomo"].astype(int).tolist() if "tomo" in table.columns else [0] * len(table)
    mapping: dict[int, str] = {}
    if table_map is not None and Path(table_map).is_file():
        for line in Path(table_map).read_text(encoding="utf-8").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                mapping[int(parts[0])] = Path(parts[1].strip()).stem
    return [mapping.get(i, str(i)) for i in indices]


def _size_for(sizes, name: str, path: Path) -> tuple[int, int, int]:
    if isinstance(sizes, Mapping):
        if name not in sizes:
            raise DynamoFormatError(f"{path.name}: no tomogram size for tomogram {name!r}")
        return tuple(sizes[name])
    if sizes is None:
        raise DynamoFormatError(f"{path.name}: Dynamo positions count from the tomogram corner; "
                                f"give the tomogram size (--tomo-size X Y Z)")
    return tuple(sizes)


# --- .em volumes: a 512-byte header (machine, dims as int32 at bytes 4-16) then the data ---

_EM_TYPES = {1: np.int8, 2: np.int16, 4: np.int32, 5: np.float32, 9: np.float64}
_EM_CODES = {np.dtype(v): k for k, v in _EM_TYPES.items()}


def read_em(path: str | Path) -> np.ndarray:
    """An .em volume as float32 in MRC order [z, y, x]."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 512:
        raise DynamoFormatError(f"{path.name}: shorter than the 512-byte EM header")
    machine, data_type = raw[0], raw[3]
    endian = "<" if machine == 6 else ">"
    if data_type not in _EM_TYPES:
        raise DynamoFormatError(f"{path.name}: unknown EM data type code {data_type}")
    nx, ny, nz = np.frombuffer(raw[4:16], dtype=f"{endian}i4")
    dtype = np.dtype(_EM_TYPES[data_type]).newbyteorder(endian)
    expected = int(nx) * int(ny) * int(nz) * dtype.itemsize
    if len(raw) - 512 < expected:
        raise DynamoFormatError(f"{path.name}: header says {nx}×{ny}×{nz} but the file holds "
                                f"{len(raw) - 512} data bytes, expected {expected}")
    data = np.frombuffer(raw[512:512 + expected], dtype=dtype).reshape(int(nz), int(ny), int(nx))
    return data.astype(np.float32)


def write_em(path: str | Path, volume: np.ndarray) -> None:
    """Write a volume [z, y, x] as a little-endian float32 .em file (atomic)."""
    volume = np.ascontiguousarray(volume, dtype="<f4")
    if volume.ndim == 2:
        volume = volume[None]
    header = bytearray(512)
    header[0], header[3] = 6, _EM_CODES[np.dtype(np.float32)]
    nz, ny, nx = volume.shape
    header[4:16] = np.array([nx, ny, nz], dtype="<i4").tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(bytes(header) + volume.tobytes())
    temporary.replace(path)
