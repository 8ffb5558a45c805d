"""Web viewer pages in headless Chromium (issue 18 acceptance): a 1024×1024×256 float32 tomogram
with 200 000 particles in it. Times, each the median of several: the tomogram page from
navigation to the first slice drawn with its particles (goal ≤ 500 ms), one slice step with
the arrow key (goal ≤ 50 ms), and the pipeline page. Ratios to the goals, and to the plain
slice PNG fetched by the same browser (the floor a page cannot beat).

``python -m benchmarks web_pages`` (``BENCH_WEB_PARTICLES=20000`` for a quick look).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_web import PIXEL_SIZE_A, SIZE_ZYX, write_volume
from tomoweave.engine import Output, ProcessContext, Protocol, Task
from tomoweave.model import Particle, ParticleTable, Tomogram

FIRST_SLICE_GOAL_S = 0.500
STEP_GOAL_S = 0.050
REPEATS = 5
STEPS = 10
PAUSE_S = 0.3  # between steps: the neighbouring slices are fetched ahead meanwhile
PARTICLES = int(os.environ.get("BENCH_WEB_PARTICLES", "200000"))


class BenchTomogram(Protocol):
    """The bench's tomogram file as a Tomogram item, and PARTICLES random particles in it."""

    name = "bench.web_tomogram"
    outputs = {"tomograms": Output(Tomogram), "particles": Output(Particle)}

    def plan(self, params, inputs) -> list[Task]:
        return [Task(key="BIG", payload={})]

    def process(self, payload, params, context: ProcessContext) -> dict:
        from tomoweave.geometry.rotations import random_rotations

        path = context.project_root / "runs" / "tomogram.mrc"
        size_xyz = (SIZE_ZYX[2], SIZE_ZYX[1], SIZE_ZYX[0])
        rng = np.random.default_rng(2)
        half = np.array(size_xyz) * PIXEL_SIZE_A / 2
        positions = rng.uniform(-half, half, (PARTICLES, 3))
        table = ParticleTable({
            "name": np.array([f"BIG_{i:06d}" for i in range(PARTICLES)], dtype=object),
            "tomogram": np.full(PARTICLES, "BIG", dtype=object), "position_a": positions,
            "rotation": random_rotations(PARTICLES, rng), "score": rng.random(PARTICLES)})
        return {"tomograms": Tomogram(name="BIG", path=context.relative(path),
                                      pixel_size_a=PIXEL_SIZE_A, size_xyz=size_xyz),
                "particles": table}


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from web_serving import chromium_page, serve

    from tomoweave.api import Project
    from tomoweave.engine.registry import register_protocol

    register_protocol(BenchTomogram)
    with tempfile.TemporaryDirectory(prefix="bench_web_pages_") as folder:
        project = Project.init(Path(folder) / "proj")
        write_volume(project.root / "runs" / "tomogram.mrc")
        started = time.perf_counter()
        run = project.run(BenchTomogram.name, executor="inline")
        print(f"project: 1024×1024×256 tomogram, {PARTICLES} particles "
              f"(recorded in {time.perf_counter() - started:.1f} s)")
        centre = SIZE_ZYX[0] // 2
        with serve(project.root) as url, chromium_page() as page:
            page.goto(url)
            page.wait_for_selector("svg.graph g.node")
            canvas = "#slice-canvas"
            first, steps, paused, pipeline, floor, drawing = [], [], [], [], [], []
            for repeat in range(REPEATS):
                page.goto(url + "#/")
                page.wait_for_selector("svg.graph g.node")
                started = time.perf_counter()
                page.goto(url + f"#/tomogram/{run.id}/tomograms/BIG")
                page.wait_for_selector(f'{canvas}[data-slice="z:{centre}"][data-sets="1"]',
                                       timeout=120_000)
                first.append(time.perf_counter() - started)
                for step in range(STEPS):
                    time.sleep(PAUSE_S if step % 2 else 0.0)  # as a person scrolls, and at once
                    started = time.perf_counter()
                    page.keyboard.press("ArrowUp")
                    page.wait_for_selector(f'{canvas}[data-slice="z:{centre + step + 1}"]')
                    (paused if step % 2 else steps).append(time.perf_counter() - started)
                    drawing.append([float(page.get_attribute(canvas, a))
                                    for a in ("data-select-ms", "data-mark-ms", "data-step-ms")])
                started = time.perf_counter()
                page.goto(url + "#/")
                page.wait_for_selector("svg.graph g.node")
                pipeline.append(time.perf_counter() - started)
                started = time.perf_counter()
                page.evaluate("""async ([path, index]) => {
                    const query = `path=${encodeURIComponent(path)}&axis=z&index=${index}`;
                    await (await fetch(`/api/volume/slice?${query}`)).blob();
                }""", ["runs/tomogram.mrc", centre + repeat])
                floor.append(time.perf_counter() - started)
            print(f"{'page':34} {'median ms':>10} {'goal ratio':>11} {'slice-fetch ratio':>18}")
            for label, values, goal in (("tomogram: first slice + particles", first,
                                         FIRST_SLICE_GOAL_S),
                                        ("tomogram: slice step at once", steps, STEP_GOAL_S),
                                        (f"tomogram: step after {PAUSE_S:g} s", paused,
                                         STEP_GOAL_S),
                                        ("pipeline page", pipeline, None)):
                ms = _median_ms(values)
                ratio = f"{ms / 1000 / goal:11.2f}" if goal else f"{'–':>11}"
                print(f"{label:34} {ms:10.0f} {ratio} {ms / _median_ms(floor):18.1f}")
            select_ms, mark_ms, in_page_ms = np.median(np.array(drawing), axis=0)
            print(f"of a step: {in_page_ms:.0f} ms in the page from the key to the drawn slice "
                  f"(the rest is the test driver's round trip), {select_ms:.1f} ms to pick the "
                  f"particles near the plane, {mark_ms:.1f} ms to draw their markers")
            print(f"plain slice PNG fetched by the page: {_median_ms(floor):.0f} ms "
                  f"(goal ratio below 1 meets the goal; {REPEATS} page loads, "
                  f"{REPEATS * STEPS} steps)")


if __name__ == "__main__":
    main()
