"""average.refine against RELION 3.1's relion_refine_mpi on the same subtomograms and reference.

Particles: the ribosome template (4v4r) at random poses, each box with its own missing wedge
(±60°) × CTF (defocus 2–4 µm) and white noise, written as RELION 3.1 subtomograms (plain boxes,
signed 3D CTF model as rlnCtfImage, priors 10–20° off the truth) — the test scaffolding of
tests/averaging_star.py, the model both programs assume. Both start from the same reference
(the truth low-passed to 40 Å) and refine with gold-standard halves; RELION with
``--auto_refine --split_random_halves --ctf`` on both cores (mpirun -n 3: a leader and two
followers), local searches (``--sigma_ang``) since priors are given.

Printed: time per iteration, total time, FSC-to-truth (0.5 and 0.143) of both, the memory peak
of each (max RSS of the process tree), and the ratios RELION / tomoweave. Then how
average.refine's time grows with the particle count and the box (TOMOWEAVE_BENCH_FULL=1: N 100,
400, 1600 and box 32, 64, 96; default a smaller grid). TOMOWEAVE_BENCH_PARTICLES sets N of the
comparison (default 400).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
say = functools.partial(print, flush=True)
PIXEL_A, DIAMETER_A, START_A = 12.0, 280.0, 40.0


def _child_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _dataset(folder: Path, count: int, box: int):
    sys.path.insert(0, str(TESTS))
    from averaging_star import write_star_set

    from tomoweave.algorithms.averaging.initial_model import lowpassed
    from tomoweave.formats.mrc import write_mrc

    star_set = write_star_set(folder, count=count, box_px=box, pixel_size_a=PIXEL_A * 32 / box
                              if box != 32 else PIXEL_A, noise=0.3)
    pixel = star_set.particles.pixel_size_a
    write_mrc(folder / "reference.mrc", lowpassed(star_set.particles.truth, pixel, START_A),
              pixel)
    return star_set


def _tomoweave(folder: Path, star: Path, max_iterations: int = 15) -> dict:
    """import.subtomograms + average.refine in a child process (its own memory peak)."""
    script = f"""
import json, resource, time
from tomoweave.api import Project
p = Project.init({str(folder / 'project')!r})
p.run('import.subtomograms', params={{'files': [{str(star)!r}]}}, executor='inline', name='imp')
p.run('import.volume', params={{'files': [{str(star.parent / 'reference.mrc')!r}]}},
      executor='inline', name='ref')
t = time.perf_counter()
r = p.run('average.refine', inputs={{'subtomograms': 'imp.subtomograms', 'reference': 'ref'}},
          params={{'particle_diameter_a': {DIAMETER_A}, 'initial_resolution_a': {START_A},
                   'max_iterations': {max_iterations}}}, executor='inline', name='refine')
seconds = time.perf_counter() - t
a = p.items(r, 'average')[0]
print(json.dumps({{'seconds': seconds, 'map': str(p.path(a.path)), 'iterations': len(a.iterations),
                  'resolution_a': a.resolution_a,
                  'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _relion(folder: Path, star: Path) -> dict | None:
    if shutil.which("relion_refine_mpi") is None or shutil.which("mpirun") is None:
        say("relion_refine_mpi not found (Debian package relion): RELION not measured")
        return None
    out = folder / "relion"
    out.mkdir(exist_ok=True)
    command = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "3",
               "relion_refine_mpi", "--o", str(out / "run"), "--i", str(star),
               "--ref", str(star.parent / "reference.mrc"), "--firstiter_cc", "--ini_high",
               str(START_A), "--particle_diameter", str(DIAMETER_A), "--auto_refine",
               "--split_random_halves", "--sym", "C1", "--ctf", "--pad", "2",
               "--flatten_solvent", "--zero_mask", "--oversampling", "1", "--healpix_order", "3",
               "--sigma_ang", "7", "--auto_local_healpix_order", "4", "--offset_range", "3",
               "--offset_step", "1", "--low_resol_join_halves", "40", "--norm", "--scale",
               "--j", "1", "--dont_combine_weights_via_disc", "--pool", "10"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=star.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        say(f"relion_refine_mpi failed ({done.returncode}): {done.stderr[-800:]}")
        return None
    iterations = len(list(out.glob("run_it*_half1_model.star")))
    return {"seconds": seconds, "map": str(out / "run_class001.mrc"), "iterations": iterations,
            "peak_mb": _child_peak_mb()}


def _to_truth(path: str, truth: np.ndarray, pixel: float) -> tuple[float, float]:
    from tomoweave.formats.mrc import read_mrc
    from tomoweave.sim.oracle import resolution_to_truth_a

    return resolution_to_truth_a(read_mrc(path)[0], truth, pixel)


def _compare(root: Path, count: int) -> None:
    folder = root / f"compare_{count}"
    shutil.rmtree(folder, ignore_errors=True)
    star_set = _dataset(folder, count, 32)
    truth = star_set.particles.truth
    ours = _tomoweave(folder, star_set.star)
    theirs = _relion(folder, star_set.star)
    say(f"{count} particles, box 32 at {PIXEL_A:g} Å/px, priors 10–20° off, reference: truth "
        f"low-passed to {START_A:g} Å")
    say(f"{'program':12s} {'iterations':>10s} {'s/iteration':>12s} {'total s':>9s} "
        f"{'FSC0.5 Å':>9s} {'FSC0.143 Å':>11s} {'peak MB':>8s}")
    rows = [("tomoweave", ours)] + ([("RELION 3.1", theirs)] if theirs else [])
    for name, row in rows:
        half, tenth = _to_truth(row["map"], truth, star_set.particles.pixel_size_a)
        row["fsc"] = (half, tenth)
        say(f"{name:12s} {row['iterations']:10d} {row['seconds'] / max(1, row['iterations']):12.1f} "
            f"{row['seconds']:9.1f} {half:9.1f} {tenth:11.1f} {row['peak_mb']:8.0f}")
    if theirs:
        per_ours = ours["seconds"] / max(1, ours["iterations"])
        per_theirs = theirs["seconds"] / max(1, theirs["iterations"])
        say(f"ratios RELION / tomoweave: total time {theirs['seconds'] / ours['seconds']:.2f}×, "
            f"time per iteration {per_theirs / per_ours:.2f}×, FSC-0.5 resolution "
            f"{theirs['fsc'][0] / ours['fsc'][0]:.2f}× (>1: tomoweave's map is closer to the "
            f"truth), memory peak {theirs['peak_mb'] / ours['peak_mb']:.2f}×")


def _scaling(root: Path) -> None:
    full = os.environ.get("TOMOWEAVE_BENCH_FULL") == "1"
    counts = (100, 400, 1600) if full else (100, 200)
    boxes = (32, 64, 96) if full else (32, 48)
    say("average.refine, 3 iterations: time against particle count and box")
    say(f"{'N':>6s} {'box':>4s} {'s/iteration':>12s} {'vs first':>9s} {'peak MB':>8s}")
    first = None
    for count, box in [(n, boxes[0]) for n in counts] + [(counts[0], b) for b in boxes[1:]]:
        folder = root / f"scaling_{count}_{box}"
        shutil.rmtree(folder, ignore_errors=True)
        star_set = _dataset(folder, count, box)
        row = _tomoweave(folder, star_set.star, max_iterations=3)
        per = row["seconds"] / max(1, row["iterations"])
        first = first or per
        say(f"{count:6d} {box:4d} {per:12.1f} {per / first:9.2f} {row['peak_mb']:8.0f}")


def main() -> None:
    root = Path(os.environ.get("TOMOWEAVE_BENCH_DIR", Path(tempfile.gettempdir())
                               / "tomoweave-bench")) / "averaging"
    root.mkdir(parents=True, exist_ok=True)
    _compare(root, int(os.environ.get("TOMOWEAVE_BENCH_PARTICLES", "400")))
    if os.environ.get("TOMOWEAVE_BENCH_SCALING", "1") == "1":
        _scaling(root)


if __name__ == "__main__":
    main()
