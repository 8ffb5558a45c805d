"""Shared fixtures: the real sample files in ../shared/data and small stacks written with numpy."""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEST_OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the sample files are expected in {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture
def test_output_dir(request) -> Path:
    folder = TEST_OUTPUT / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_stack(path: Path, n_tilts: int, size_yx=(64, 64), pixel_size_a=10.0, seed=0) -> Path:
    """A random MRC stack of ``n_tilts`` images and a matching .tlt beside it."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n_tilts, *size_yx)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = pixel_size_a
    angles = np.linspace(-60, 60, n_tilts)
    path.with_suffix(".tlt").write_text("".join(f"{a:.2f}\n" for a in angles))
    return path


@pytest.fixture
def stack_factory(tmp_path):
    def make(name: str = "TS_01", n_tilts: int = 21, size_yx=(64, 64), seed=0) -> Path:
        return write_stack(tmp_path / "data" / f"{name}.mrc", n_tilts, size_yx, seed=seed)

    return make


def snapshot_project(root: Path) -> dict[str, object]:
    """What a project looks like from outside: its files and the catalog's rows."""
    import sqlite3

    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if "-wal" not in p.name and "-shm" not in p.name)
    connection = sqlite3.connect(root / "project.sqlite")
    tables = {t: connection.execute(f"SELECT * FROM {t}").fetchall()
              for t in ("runs", "sets", "items", "journal")}
    connection.close()
    return {"files": files, "tables": tables}


os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
