"""Slices of memory-mapped MRC volumes and tilt images, binned and contrast-mapped into PNGs.

Volumes are never read whole: a slice touches only the bytes of its plane (and of the slab that
binning averages). Intensity statistics come from a strided subsample, once per file version.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

AXES = ("z", "y", "x")  # slice normal: z -> XY plane, y -> XZ plane, x -> YZ plane
MAX_STAT_SAMPLES = 1_000_000
_OPEN_LIMIT = 8
SMALL_PLANE_PX = 256 * 256
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class VolumeInfo:
    shape_zyx: tuple[int, ...]
    pixel_size_a: float
    mean: float
    std: float


class _MrcCache:
    """A few open memory maps, keyed by path and modification time (a rewritten file reopens)."""

    def __init__(self, limit: int = _OPEN_LIMIT):
        self.limit = limit
        self.entries: OrderedDict[tuple[str, float], tuple[mrcfile.mrcfile.MrcFile, VolumeInfo]] = (
            OrderedDict())
        self.lock = threading.Lock()

    def get(self, path: Path) -> tuple[np.ndarray, VolumeInfo]:
        key = (str(path), path.stat().st_mtime)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                mrc, info = self.entries[key]
                return mrc.data, info
        mrc = mrcfile.mmap(path, mode="r", permissive=True)
        if mrc.data is None:
            mrc.close()
            raise ValueError(f"{path.name}: no image data in this MRC file")
        info = _volume_info(mrc)
        with self.lock:
            self.entries[key] = (mrc, info)
            while len(self.entries) > self.limit:
                _, (old, _) = self.entries.popitem(last=False)
                old.close()
        return mrc.data, info


_cache = _MrcCache()


def _volume_info(mrc) -> VolumeInfo:
    data = mrc.data
    step = max(1, int(np.ceil((data.size / MAX_STAT_SAMPLES) ** (1 / data.ndim))))
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim], dtype=np.float32)
    pixel_size_a = float(mrc.voxel_size.x) or 1.0
    std = float(sample.std()) or 1.0
    return VolumeInfo(tuple(int(n) for n in data.shape), pixel_size_a, float(sample.mean()), std)


def volume_info(path: Path) -> VolumeInfo:
    return _cache.get(path)[1]


def volume_slice(path: Path, axis: str, index: int, binning: int = 1) -> np.ndarray:
    """A plane of a volume [z, y, x] normal to ``axis``, averaged over a slab of ``binning``
    planes and block-averaged ``binning``×``binning`` in plane. Shapes: z -> (ny, nx),
    y -> (nz, nx), x -> (nz, ny)."""
    data, info = _cache.get(path)
    if data.ndim == 2:
        data = data[np.newaxis]
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    dim = AXES.index(axis)
    size = data.shape[dim]
    binning = max(1, int(binning))
    start = min(max(0, int(index)), size - 1)
    stop = min(size, start + binning)
    selector: list[slice] = [slice(None)] * 3
    selector[dim] = slice(start, stop)
    slab = np.asarray(data[tuple(selector)], dtype=np.float32)
    plane = slab.mean(axis=dim) if stop - start > 1 else np.squeeze(slab, axis=dim)
    return block_average(plane, binning)


def image_plane(path: Path, index: int, binning: int = 1) -> np.ndarray:
    """Image ``index`` of a 2D image or a stack, block-averaged by ``binning``."""
    data, _ = _cache.get(path)
    if data.ndim == 3:
        if not 0 <= index < data.shape[0]:
            raise IndexError(f"{path.name}: has {data.shape[0]} images, asked for image {index}")
        plane = np.asarray(data[index], dtype=np.float32)
    else:
        plane = np.asarray(data, dtype=np.float32)
    return block_average(plane, max(1, int(binning)))


def volume_binned(path: Path, max_size_px: int = 64) -> tuple[np.ndarray, int]:
    """The whole volume [z, y, x] block-averaged by the smallest power of two that brings every
    axis within ``max_size_px`` (for the 3D view), float32 C-ordered, and that binning."""
    data, _ = _cache.get(path)
    if data.ndim == 2:
        data = data[np.newaxis]
    binning = auto_binning(data.shape, max_size_px)
    if binning == 1:
        return np.ascontiguousarray(data, dtype=np.float32), 1
    steps = [min(binning, n) for n in data.shape]  # a thin axis is averaged whole
    sizes = [n // f for n, f in zip(data.shape, steps, strict=True)]
    cropped = np.asarray(data[tuple(slice(0, n * f) for n, f in zip(sizes, steps, strict=True))],
                         dtype=np.float32)
    blocks = cropped.reshape(sizes[0], steps[0], sizes[1], steps[1], sizes[2], steps[2])
    return np.ascontiguousarray(blocks.mean(axis=(1, 3, 5), dtype=np.float32)), binning


def block_average(plane: np.ndarray, binning: int) -> np.ndarray:
    if binning <= 1:
        return plane
    ny, nx = (plane.shape[0] // binning) * binning, (plane.shape[1] // binning) * binning
    if ny == 0 or nx == 0:
        return plane
    blocks = plane[:ny, :nx].reshape(ny // binning, binning, nx // binning, binning)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def to_png(plane: np.ndarray, low: float, high: float) -> bytes:
    """Grey PNG of ``plane`` with ``low`` -> black and ``high`` -> white, drawn y up (3dmod's
    convention, and the run pages' pictures'): the plane's row 0 is the PNG's bottom row."""
    span = (high - low) or 1.0
    scaled = (plane[::-1] - np.float32(low)) * np.float32(255.0 / span)
    grey = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    return encode_grey_png(grey)


def encode_grey_png(grey: np.ndarray) -> bytes:
    """8-bit grey PNG without row filters. Noisy cryo-ET slices barely compress (~10-25 %), and
    deflating them costs ~30x more than the slice itself, so big planes are stored uncompressed
    (level 0) and only small ones are deflated."""
    height, width = grey.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # a leading 0 per row: filter "none"
    rows[:, 1:] = grey
    level = 1 if grey.size <= SMALL_PLANE_PX else 0
    return (PNG_SIGNATURE
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def contrast_limits(plane: np.ndarray, info: VolumeInfo | None, low_sigma: float,
                    high_sigma: float, per_slice: bool) -> tuple[float, float]:
    """Grey limits in units of the standard deviation around the mean (of the file, or of
    this plane when ``per_slice`` or no file statistics exist)."""
    if per_slice or info is None:
        mean, std = float(plane.mean()), float(plane.std()) or 1.0
    else:
        mean, std = info.mean, info.std
    return mean + low_sigma * std, mean + high_sigma * std


def auto_binning(plane_shape: tuple[int, ...], max_size_px: int = 1024) -> int:
    """Smallest power-of-two binning that fits a plane (or volume) into ``max_size_px``."""
    binning = 1
    while max(plane_shape) / binning > max_size_px:
        binning *= 2
    return binning
