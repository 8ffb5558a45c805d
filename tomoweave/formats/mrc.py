"""MRC images, stacks and volumes (via mrcfile), with the pixel size from the header.

Arrays are float32 in MRC order: images [y, x], stacks [n, y, x], volumes [z, y, x].
Writes are atomic: data goes to a temporary file beside the target, then is renamed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mrcfile
import numpy as np


class MrcError(ValueError):
    """An MRC file that cannot be read; the message names the file and the problem."""


def read_mrc(path: str | Path) -> tuple[np.ndarray, float]:
    """Read an MRC file fully: (float32 array, pixel size in Å; 0.0 when the header has none).

    The pixel size comes from the header's voxel size, else from an FEI/EPU extended header.
    """
    with _open(path, mmap=False) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
        return data, _pixel_size_a(mrc)


def mmap_mrc(path: str | Path):
    """Memory-map an MRC file read-only; use as a context manager, ``.data`` is the array."""
    return _open(path, mmap=True)


def mrc_header_info(path: str | Path) -> dict:
    """Shape (MRC order), pixel size in Å and data mode without reading the data."""
    with _open(path, mmap=True) as mrc:
        return {
            "shape": tuple(int(s) for s in mrc.data.shape),
            "pixel_size_a": _pixel_size_a(mrc),
            "mode": int(mrc.header.mode),
        }


def mrc_extended_header(path: str | Path) -> list[dict]:
    """Per-section values of an FEI1/FEI2 extended header (Thermo Fisher EPU/Tomo), in our units.

    Each dict has ``tilt_deg`` (alpha tilt), ``tilt_axis_deg``, ``pixel_size_a``, ``defocus_a``
    (positive = underfocus; FEI stores metres, negative under focus), ``voltage_kv``,
    ``dose_e_a2`` (FEI stores electrons per m²) and ``timestamp`` (days since 1899-12-30, as FEI
    writes it). Empty when the file has no FEI extended header.
    """
    with _open(path, mmap=True) as mrc:
        if bytes(mrc.header.exttyp) not in (b"FEI1", b"FEI2") or mrc.extended_header is None:
            return []
        records = mrc.indexed_extended_header
        if records is None or len(records) == 0:
            return []
        return [_fei_record(record) for record in records]


def _fei_record(record) -> dict:
    return {
        "tilt_deg": float(record["Alpha tilt"]),
        "tilt_axis_deg": float(record["Tilt axis angle"]),
        "pixel_size_a": float(record["Pixel size X"]) * 1e10,
        "defocus_a": -float(record["Defocus"]) * 1e10,
        "voltage_kv": float(record["HT"]) / 1000.0,
        "dose_e_a2": float(record["Dose"]) * 1e-20,
        "timestamp": float(record["Timestamp"]),
    }


def _pixel_size_a(mrc) -> float:
    """Header voxel size in Å, else the first FEI extended-header pixel size, else 0."""
    size = float(mrc.voxel_size.x)
    if size > 0 or bytes(mrc.header.exttyp) not in (b"FEI1", b"FEI2"):
        return size
    try:
        records = mrc.indexed_extended_header
    except Exception:  # a malformed extended header must not hide the image data
        return size
    if records is None or len(records) == 0:
        return size
    return float(records[0]["Pixel size X"]) * 1e10


def write_mrc(path: str | Path, data: np.ndarray, pixel_size_a: float, stack: bool = False) -> Path:
    """Write ``data`` as float32 MRC with the given pixel size, atomically. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: refusing to write non-finite values (NaN or inf)")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with mrcfile.new(temporary, overwrite=True) as mrc:
            mrc.set_data(array)
            if stack and array.ndim == 3:
                mrc.header.ispg = 0
            mrc.voxel_size = float(pixel_size_a)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _open(path: str | Path, mmap: bool):
    path = Path(path)
    if not path.exists():
        raise MrcError(f"{path}: file not found")
    try:
        if mmap:
            return mrcfile.mmap(path, mode="r", permissive=False)
        return mrcfile.open(path, mode="r", permissive=False)
    except Exception as error:  # mrcfile raises ValueError/EOFError/RuntimeWarning variants
        raise MrcError(f"{path}: not a readable MRC file ({error})") from error
