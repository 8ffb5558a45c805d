"""Web viewer: time to serve XY/XZ/YZ slices of a 1024×1024×256 float32 tomogram as PNG.

Measured through the real HTTP app (FastAPI TestClient, in process) against the 300 ms goal, and
against two plain ways of doing the same in Python: ``mrcfile.open`` (reads the file) + numpy +
PNG, and ``mrcfile.mmap`` opened per request + numpy + PNG.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
from PIL import Image

SIZE_ZYX = (256, 1024, 1024)
PIXEL_SIZE_A = 10.0
GOAL_SECONDS = 0.300
REPEATS = 9


def write_volume(path: Path) -> None:
    """A float32 volume with some structure (smooth blobs under noise), written plane by plane."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:SIZE_ZYX[1], :SIZE_ZYX[2]]
    pattern = (np.sin(x / 37.0) * np.cos(y / 23.0)).astype(np.float32)
    with mrcfile.new_mmap(path, shape=SIZE_ZYX, mrc_mode=2, overwrite=True) as mrc:
        for z in range(SIZE_ZYX[0]):
            mrc.data[z] = pattern + rng.normal(0, 1, SIZE_ZYX[1:]).astype(np.float32)
        mrc.voxel_size = PIXEL_SIZE_A


def _plain_png(plane: np.ndarray) -> bytes:
    mean, std = float(plane.mean()), float(plane.std()) or 1.0
    grey = np.clip((plane - mean + 3 * std) / (6 * std) * 255, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    return buffer.getvalue()


def _take(data: np.ndarray, axis: str, index: int) -> np.ndarray:
    if axis == "z":
        return np.asarray(data[index], dtype=np.float32)
    if axis == "y":
        return np.asarray(data[:, index, :], dtype=np.float32)
    return np.asarray(data[:, :, index], dtype=np.float32)


def plain_open(path: Path, axis: str, index: int) -> bytes:
    with mrcfile.open(path, permissive=True) as mrc:
        return _plain_png(_take(mrc.data, axis, index))


def plain_mmap(path: Path, axis: str, index: int) -> bytes:
    with mrcfile.mmap(path, permissive=True) as mrc:
        return _plain_png(_take(mrc.data, axis, index))


def _median_seconds(function, indices: list[int]) -> float:
    times = []
    for index in indices:
        started = time.perf_counter()
        function(index)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    from fastapi.testclient import TestClient

    from tomoweave.api import Project
    from tomoweave.web import create_app

    with tempfile.TemporaryDirectory(prefix="bench_web_") as folder:
        project = Project.init(Path(folder) / "proj")
        volume = project.root / "runs" / "tomogram.mrc"
        started = time.perf_counter()
        write_volume(volume)
        print(f"wrote {volume.stat().st_size / 2**30:.2f} GiB test tomogram "
              f"{SIZE_ZYX[2]}x{SIZE_ZYX[1]}x{SIZE_ZYX[0]} in {time.perf_counter() - started:.1f} s")
        client = TestClient(create_app(project.root), base_url="http://127.0.0.1")
        relative = volume.relative_to(project.root).as_posix()
        started = time.perf_counter()
        first = client.get("/api/volume/slice", params={"path": relative, "axis": "z"})
        first.raise_for_status()
        print(f"first slice (opens the memory map, samples statistics): "
              f"{1000 * (time.perf_counter() - started):.0f} ms")
        rng = np.random.default_rng(1)
        print(f"{'plane':6} {'served ms':>10} {'goal ratio':>11} {'open+png ms':>12} "
              f"{'speed-up':>9} {'mmap+png ms':>12} {'speed-up':>9}")
        for axis, label, depth in (("z", "XY", SIZE_ZYX[0]), ("y", "XZ", SIZE_ZYX[1]),
                                   ("x", "YZ", SIZE_ZYX[2])):
            indices = rng.integers(0, depth, REPEATS).tolist()

            def served(index: int, axis: str = axis) -> None:
                response = client.get("/api/volume/slice", params={
                    "path": relative, "axis": axis, "index": index, "binning": 1})
                response.raise_for_status()

            ours = _median_seconds(served, indices)
            opened = _median_seconds(lambda i, a=axis: plain_open(volume, a, i), indices[:3])
            mapped = _median_seconds(lambda i, a=axis: plain_mmap(volume, a, i), indices)
            print(f"{label:6} {1000 * ours:10.0f} {ours / GOAL_SECONDS:11.2f} "
                  f"{1000 * opened:12.0f} {opened / ours:9.1f} {1000 * mapped:12.0f} "
                  f"{mapped / ours:9.1f}")
        print(f"goal ratio = served time / {GOAL_SECONDS * 1000:.0f} ms (below 1 meets the goal); "
              f"speed-up = plain Python time / served time")


if __name__ == "__main__":
    main()
