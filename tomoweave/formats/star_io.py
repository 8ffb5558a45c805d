"""STAR reading and writing shared by the RELION and Warp modules, with errors that name things."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import starfile


class StarFormatError(ValueError):
    """A malformed or incomplete STAR file; names the file, block/column and what was expected."""


_RECENT_FILES = 4  # parsed files kept: detecting a format, planning and validating a run
_recent: OrderedDict[tuple, dict] = OrderedDict()  # read the same file several times


def read_star_blocks(path: str | Path) -> dict[str, pd.DataFrame | dict]:
    """All data blocks of a STAR file, by name (``starfile`` with errors that name the file).

    The last few files parsed are kept (by path, size and modification time) and returned as
    copies, so a 10⁵-row file read again while a run is planned is not parsed again."""
    path = Path(path)
    if not path.is_file():
        raise StarFormatError(f"{path}: no such file")
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _recent:
        try:
            blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnTomoName"])
        except Exception as error:  # starfile/pandas raise many kinds; keep the file name
            raise StarFormatError(f"{path.name}: not a readable STAR file ({error})") from error
        if not blocks:
            raise StarFormatError(f"{path.name}: no data_ block")
        _recent[key] = blocks
        while len(_recent) > _RECENT_FILES:
            _recent.popitem(last=False)
    _recent.move_to_end(key)
    return {name: block.copy() for name, block in _recent[key].items()}


def star_table(path: str | Path, block: str | None = None,
               blocks: dict | None = None) -> pd.DataFrame:
    """One loop block as a DataFrame: ``block`` by name, or the only/first loop block
    (``blocks``: the file's blocks when already read)."""
    path = Path(path)
    blocks = blocks if blocks is not None else read_star_blocks(path)
    if block is not None:
        if block not in blocks:
            raise StarFormatError(f"{path.name}: no data_{block} block "
                                  f"(blocks: {', '.join(blocks) or 'none'})")
        table = blocks[block]
    else:
        tables = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
        if not tables:
            raise StarFormatError(f"{path.name}: no loop_ table")
        table = tables[0]
    if isinstance(table, dict):  # a single-row block written without loop_
        table = pd.DataFrame([table])
    return table


def require_columns(
    table: pd.DataFrame, columns: Iterable[str], path: str | Path, block: str, why: str
) -> None:
    """Raise naming the first missing column of ``columns``."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise StarFormatError(
            f"{Path(path).name}: data_{block}: column _{missing[0]} missing "
            f"(needed for {why}; columns present: {', '.join(table.columns[:12])}"
            f"{' ...' if len(table.columns) > 12 else ''})"
        )


def numeric_column(table: pd.DataFrame, column: str, path: str | Path, block: str) -> pd.Series:
    """A column as floats; a non-number names its row (1-based) and value."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise StarFormatError(
            f"{Path(path).name}: data_{block}: column _{column}, row {row + 1}: expected a "
            f"number, got {table[column].iloc[row]!r}"
        )
    return values.astype(float)


def write_star_blocks(path: str | Path, blocks: dict[str, pd.DataFrame | dict]) -> None:
    """Write blocks atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.star")
    starfile.write(blocks, temporary, float_format="%.10g")
    temporary.replace(path)


# RELION's type suffixes: ``name:mrcs`` reads an MRC file as a stack of 2D images whatever its
# extension (RELION refuses ``n@name.mrc``: it reserves .mrc for 3D maps).
RELION_FILE_TYPES = (":mrcs", ":mrc", ":spi", ":tif", ":tiff", ":eer")


def relion_image_name(path: str, index: int | None = None) -> str:
    """RELION's name of image ``index`` (0-based) of a stack: ``n@path`` with n 1-based, and
    ``:mrcs`` after a stack not named .mrcs; ``path`` alone when ``index`` is None."""
    if index is None:
        return path
    typed = path if path.lower().endswith(".mrcs") else f"{path}:mrcs"
    return f"{index + 1}@{typed}"


def split_relion_image_name(name: str) -> tuple[int | None, str]:
    """(0-based index or None, file path) of RELION's ``[n@]path[:type]``."""
    index = None
    if "@" in name and name.split("@", 1)[0].isdigit():
        number, name = name.split("@", 1)
        index = int(number) - 1
    for suffix in RELION_FILE_TYPES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return index, name
