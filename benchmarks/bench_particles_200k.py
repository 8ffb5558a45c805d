"""200 000 particles over 100 tomograms through a project (issue 13): import from a RELION 5
STAR, duplicate removal, score filter, export to RELION 5 and Dynamo, ``show --json`` of one
page. Each step's seconds against ``starfile``'s plain read/write of the same table (the
floor: parsing and writing the text without any model), the peak memory of the whole process
tree (scheduler and workers, sampled from /proc) and the size of the catalog.

``python -m benchmarks particles_200k`` (``BENCH_PARTICLES=20000`` for a quick look).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from tomoweave.api import Project
from tomoweave.geometry import matrices_to_relion_zyz
from tomoweave.geometry.rotations import random_rotations

TOMOGRAMS = 100
DUPLICATE_FRACTION = 0.05  # re-picks within 10 Å of a particle: removed at 30 Å
PIXEL_SIZE_A = 10.0
TOMO_SIZE_XYZ = (400, 400, 100)
MEMORY_LIMIT_GIB = 2.0
CATALOG_LIMIT_MB = 100.0


def simulated_star(path: Path, count: int, seed: int = 0) -> pd.DataFrame:
    """A RELION 5 particles STAR of ``count`` particles (5 % of them duplicates)."""
    rng = np.random.default_rng(seed)
    unique = int(round(count * (1 - DUPLICATE_FRACTION)))
    half = np.array(TOMO_SIZE_XYZ) * PIXEL_SIZE_A / 2 * 0.9
    tomogram = np.sort(rng.integers(0, TOMOGRAMS, unique))
    positions = rng.uniform(-half, half, (unique, 3))
    copies = rng.integers(0, unique, count - unique)
    tomogram = np.concatenate([tomogram, tomogram[copies]])
    positions = np.concatenate([positions, positions[copies] + rng.normal(0, 4.0, (len(copies), 3))])
    angles = matrices_to_relion_zyz(random_rotations(count, rng))
    names = np.array([f"TS_{t:03d}" for t in range(TOMOGRAMS)])[tomogram]
    table = pd.DataFrame({
        "rlnTomoName": names,
        "rlnTomoParticleName": [f"{n}/{i + 1}" for i, n in enumerate(names)],
        "rlnCenteredCoordinateXAngst": positions[:, 0],
        "rlnCenteredCoordinateYAngst": positions[:, 1],
        "rlnCenteredCoordinateZAngst": positions[:, 2],
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
        "rlnMaxValueProbDistribution": rng.random(count),
        "rlnOpticsGroup": 1})
    optics = pd.DataFrame([{"rlnOpticsGroup": 1, "rlnOpticsGroupName": "opticsGroup1",
                            "rlnVoltage": 300.0, "rlnSphericalAberration": 2.7,
                            "rlnAmplitudeContrast": 0.07,
                            "rlnTomoTiltSeriesPixelSize": PIXEL_SIZE_A}])
    starfile.write({"optics": optics, "particles": table}, path, overwrite=True)
    return table


class TreeMemory:
    """Peak resident memory of this process and all its descendants, sampled every 50 ms."""

    def __init__(self):
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _tree_pages(os.getpid()) * page)
            self._stop.wait(0.05)


def _tree_pages(root: int) -> int:
    parents: dict[int, int] = {}
    resident: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as statm:
                resident[int(entry)] = int(statm.read().split()[1])
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += resident.get(pid, 0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def _timed(label: str, function, times: dict[str, float]):
    start = time.perf_counter()
    result = function()
    times[label] = time.perf_counter() - start
    return result


def main() -> None:
    count = int(os.environ.get("BENCH_PARTICLES", "200000"))
    workers = int(os.environ.get("BENCH_WORKERS", "2"))
    with tempfile.TemporaryDirectory(prefix="tw-bench-200k-") as folder:
        root = Path(folder)
        star = root / "particles.star"
        floor: dict[str, float] = {}
        _timed("starfile.write", lambda: simulated_star(star, count), floor)
        _timed("starfile.read", lambda: starfile.read(star), floor)
        times: dict[str, float] = {}
        with TreeMemory() as memory:
            project = Project.init(root / "project")
            run = lambda protocol, **kw: project.run(protocol, executor="local",  # noqa: E731
                                                     workers=workers, **kw)
            imported = _timed("import.relion5", lambda: run(
                "import.relion5", params={"files": [str(star)]}), times)
            unique = _timed("particles.remove_duplicates", lambda: run(
                "particles.remove_duplicates", inputs={"particles": f"{imported.name}.particles"},
                params={"distance_a": 30.0}), times)
            kept = _timed("particles.filter (score)", lambda: run(
                "particles.filter", inputs={"particles": unique.name},
                params={"min_score": 0.5}), times)
            _timed("export.relion5", lambda: run(
                "export.relion5", inputs={"particles": kept.name},
                params={"out_dir": str(root / "relion5"), "pixel_size_a": PIXEL_SIZE_A}), times)
            _timed("export.dynamo", lambda: run(
                "export.dynamo", inputs={"particles": kept.name},
                params={"out_dir": str(root / "dynamo"), "pixel_size_a": PIXEL_SIZE_A,
                        "tomo_size_xyz": list(TOMO_SIZE_XYZ)}), times)
            page = _timed("show --json (page of 100)", lambda: _show_page(project, kept.name),
                          times)
        counts = {name: project.catalog.count_items(project.output_set(r, "particles").id)
                  for name, r in (("imported", imported), ("unique", unique), ("kept", kept))}
        catalog_mb = sum(p.stat().st_size for p in project.root.glob("project.sqlite*")) / 1e6
        tables_mb = sum(p.stat().st_size for p in project.root.rglob("*.parquet")) / 1e6
        exported = len(starfile.read(root / "relion5" / "particles.star")["particles"])
    _report(count, workers, floor, times, memory.peak_bytes, catalog_mb, tables_mb, counts,
            exported, page)


def _show_page(project: Project, run_name: str) -> dict:
    command = [sys.executable, "-m", "tomoweave.cli", "show", f"{run_name}.particles", "--json",
               "--offset", "1000", "--limit", "100", "-p", str(project.root)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def _report(count, workers, floor, times, peak_bytes, catalog_mb, tables_mb, counts, exported,
            page) -> None:
    print(f"{count} particles over {TOMOGRAMS} tomograms, {workers} workers (local executor)")
    print(f"floor: starfile.read {floor['starfile.read']:.2f} s, "
          f"starfile.write {floor['starfile.write']:.2f} s")
    print(f"{'step':32s} {'seconds':>8s} {'x starfile.read':>16s} {'x starfile.write':>17s}")
    for label, seconds in times.items():
        print(f"{label:32s} {seconds:8.2f} {seconds / floor['starfile.read']:16.2f} "
              f"{seconds / floor['starfile.write']:17.2f}")
    peak_gib = peak_bytes / 2**30
    print(f"peak memory (process tree) {peak_gib:.2f} GiB (limit {MEMORY_LIMIT_GIB} GiB: "
          f"{'ok' if peak_gib <= MEMORY_LIMIT_GIB else 'OVER'})")
    print(f"catalog {catalog_mb:.2f} MB (limit {CATALOG_LIMIT_MB:.0f} MB: "
          f"{'ok' if catalog_mb <= CATALOG_LIMIT_MB else 'OVER'}); particle tables "
          f"{tables_mb:.1f} MB")
    print(f"particles: imported {counts['imported']}, after duplicates {counts['unique']} "
          f"(simulated unique {int(round(count * (1 - DUPLICATE_FRACTION)))}), after score "
          f"filter {counts['kept']}, exported to RELION 5 {exported}")
    print(f"show page: {len(page['items'])} items of {page['count']}, first "
          f"{page['items'][0]['name'] if page['items'] else None}")


if __name__ == "__main__":
    main()
