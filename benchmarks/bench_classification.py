"""3D classification against RELION 3.1's relion_refine_mpi (Debian relion), same particles.

Particles: sim.mixtures.two_species (3j9i and 6pxm, 80/20, the sta_test preset's CTF and ice,
at its dose and at a tenth of it), premultiplied subtomograms with their CTF² weight, 32³ at
10 Å, written with a RELION 3.1 STAR at their true poses. Both classify into K = 2 without
alignment for the same number of iterations: RELION with ``--skip_align`` (subtomogram mode
from ``rlnImageDimensionality`` 3; both cores: 1 master + 2 workers, ``--j 1``) from the
consensus map; tomoweave's ``classes3d.classify`` (soft, 2 threads) from its PCA seeds.
Printed: seconds per iteration (RELION's from its per-iteration files' times), the ratio, and
the adjusted Rand index of each against the truth.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tomoweave.algorithms.averaging.particle_images import load_particle_images
from tomoweave.algorithms.averaging.reconstruction import reconstruct
from tomoweave.algorithms.averaging.sources import ImageSource
from tomoweave.algorithms.classification import classes3d
from tomoweave.formats.mrc import write_mrc
from tomoweave.formats.relion_subtomograms import read_relion31_subtomograms
from tomoweave.formats.star_io import read_star_blocks
from tomoweave.sim import mixtures
from tomoweave.sim.metrics import adjusted_rand_index

say = functools.partial(print, flush=True)
COUNT, FRACTION, ITERATIONS, DIAMETER_A = 300, 0.8, 8, 240.0
DOSE_SCALES = (1.0, 0.1)  # the preset's dose, and a tenth of it (noisier)


def relion_classify(folder: Path, reference: Path, iterations: int) -> tuple[Path, float]:
    """Run relion_refine_mpi 3D classification; returns the output folder and wall seconds."""
    out = folder / "relion"
    out.mkdir(exist_ok=True)
    command = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "3",
               "relion_refine_mpi", "--i", "particles.star", "--o", "relion/run",
               "--ref", reference.name, "--ini_high", "40", "--K", "2",
               "--iter", str(iterations), "--tau2_fudge", "4", "--particle_diameter",
               str(DIAMETER_A), "--zero_mask", "--skip_align", "--ctf", "--pad", "2", "--j",
               "1", "--dont_combine_weights_via_disc", "--pool", "30", "--sym", "C1"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"relion_refine_mpi failed:\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-2000:]}")
    return out, seconds


def relion_iteration_seconds(out: Path) -> float:
    """Median time between consecutive iterations' model files."""
    times = sorted(p.stat().st_mtime for p in out.glob("run_it*_model.star"))
    return float(np.median(np.diff(times))) if len(times) > 2 else float("nan")


def relion_labels(out: Path, iterations: int) -> dict[str, int]:
    """Particle name -> class (0-based) of the last iteration's data STAR."""
    blocks = read_star_blocks(out / f"run_it{iterations:03d}_data.star")
    table = blocks["particles"]
    return {Path(str(n)).stem: int(k) - 1 for n, k in zip(table["rlnImageName"],
                                                          table["rlnClassNumber"], strict=True)}


def main() -> None:
    if shutil.which("relion_refine_mpi") is None or shutil.which("mpirun") is None:
        say("relion_refine_mpi or mpirun not found (Debian package relion): skipped")
        return
    for dose_scale in DOSE_SCALES:
        with tempfile.TemporaryDirectory() as tmp:
            compare(Path(tmp), dose_scale)


def compare(folder: Path, dose_scale: float) -> None:
    """Both classifications of one particle set; prints the figures."""
    particles = mixtures.two_species(COUNT, fraction_first=FRACTION, dose_scale=dose_scale,
                                     seed=11)
    star = mixtures.write_subtomograms(folder, particles)
    subtomograms, _ = read_relion31_subtomograms(star)
    images = load_particle_images(subtomograms, lambda p: folder / p)
    truth = particles.labels[np.array([int(s.name[1:]) for s in subtomograms])]
    rotations = np.array([s.particle.rotation_matrix for s in subtomograms])
    consensus = reconstruct(images.data_ft, images.weight, rotations)
    write_mrc(folder / "consensus.mrc", consensus, images.pixel_size_a)
    say(f"{COUNT} particles ({FRACTION:.0%} / {1 - FRACTION:.0%}), dose × {dose_scale:g}, "
        f"{images.box_px}³ at {images.pixel_size_a:g} Å, {ITERATIONS} iterations, K = 2, "
        "no alignment")

    source = ImageSource.from_arrays(images.data_ft, images.weight, images.pixel_size_a)
    settings = classes3d.ClassifySettings(classes=2, particle_diameter_a=DIAMETER_A,
                                          max_iterations=ITERATIONS, min_changed_fraction=0.0,
                                          n_threads=2)
    halves = 1 + np.arange(COUNT) % 2
    started = time.perf_counter()
    state = classes3d.initial_state(source, rotations, np.zeros((COUNT, 3)), halves, settings)
    seeding = time.perf_counter() - started
    result = classes3d.classify(source, state, settings)
    ours_total = time.perf_counter() - started
    ours_iteration = float(np.median([h["seconds"] for h in result.state.history]))
    ours_ari = adjusted_rand_index(result.labels, truth)

    out, relion_total = relion_classify(folder, folder / "consensus.mrc", ITERATIONS)
    relion_iteration = relion_iteration_seconds(out)
    found = relion_labels(out, ITERATIONS)
    relion_ari = adjusted_rand_index([found[s.name] for s in subtomograms], truth)

    say(f"  tomoweave average.classify: {ours_iteration:.2f} s/iteration (seeding "
        f"{seeding:.1f} s, total {ours_total:.1f} s), ARI {ours_ari:.3f}")
    say(f"  RELION 3.1 relion_refine_mpi: {relion_iteration:.2f} s/iteration (total "
        f"{relion_total:.1f} s), ARI {relion_ari:.3f}")
    say(f"  ratio RELION / tomoweave time per iteration: {relion_iteration / ours_iteration:.2f}")


if __name__ == "__main__":
    main()
