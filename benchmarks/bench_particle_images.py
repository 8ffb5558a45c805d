"""Particle images for averaging on the strong-CTF simulated set: which kind carries the signal.

Simulates the ``sta_ctf`` preset (4 Å/px, defocus 3–5 µm per series, ±60° dose-symmetric,
3 e/Å² per tilt, proteasomes 3j9i; set TOMOWEAVE_BENCH_PRESET=sta_ctf_test for a quick run)
into $TOMOWEAVE_BENCH_DIR (default: a folder under the system's temp dir, kept between runs),
then builds four kinds of particle images of every particle at binning 2 (8 Å/px):

- plain:      boxes of a WBP tomogram, weight = missing wedge of the actual tilts (no CTF)
- ctf_model:  the same boxes with each particle's signed 3D CTF model (its own defocus)
- ctf3d:      boxes of a 3D-CTF-corrected tomogram (phase flip per height) with its model
- pseudo:     pseudo-subtomograms from the tilts (CTF-premultiplied, dose-weighted)

and reconstructs each with the oracle (true poses, sim.oracle) against the true density. It
prints the FSC-to-truth resolution at 0.5 and 0.143 and, as time ratios measured in the same
run (after a warm-up), how long each kind takes per particle relative to the plain boxes
(extraction and weight; the tomograms themselves are not counted).
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from tomoweave.sim import simulate_dataset
from tomoweave.sim.oracle import KINDS, compare_particle_images

say = functools.partial(print, flush=True)
BINNING = 2
BOX = 40


def _dataset(preset: str):
    folder = Path(os.environ.get("TOMOWEAVE_BENCH_DIR", Path(tempfile.gettempdir())
                                 / "tomoweave-bench")) / f"{preset}-seed7"
    marker = folder / "complete"
    if not marker.exists():
        say(f"simulating {preset} into {folder} (kept for later runs)")
        dataset = simulate_dataset(folder, preset, seed=7)
        marker.write_text("ok")
        return folder, dataset.truths()
    from tomoweave.sim import load_truth
    return folder, [load_truth(p) for p in sorted((folder / "truth").glob("*.json"))]


def main() -> None:
    preset = os.environ.get("TOMOWEAVE_BENCH_PRESET", "sta_ctf")
    folder, truths = _dataset(preset)
    results = compare_particle_images(folder, truths, BOX, BINNING)
    first = results["plain"]
    defoci = [t.nominal_defocus_a for t in truths]
    say(f"{preset}: {first['particles']} particles of {first['template']} in {len(truths)} "
        f"series, defocus {min(defoci) / 1e4:.1f}–{max(defoci) / 1e4:.1f} µm, "
        f"{truths[0].pixel_size_a:g} Å/px binned {BINNING}× to {first['pixel_size_a']:g} Å/px, "
        f"box {BOX}")
    say(f"{'kind':10s} {'FSC 0.5 (Å)':>12s} {'FSC 0.143 (Å)':>14s} {'time/plain':>11s}")
    for kind in KINDS:
        half, tenth = results[kind]["resolution_a"]
        say(f"{kind:10s} {half:12.1f} {tenth:14.1f} "
            f"{results[kind]['seconds'] / first['seconds']:11.2f}")


if __name__ == "__main__":
    main()
