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
import time
from pathlib import Path

import numpy as np

from tomoweave.algorithms import extraction, reconstruction
from tomoweave.algorithms.averaging import pseudo_subtomograms as pseudo
from tomoweave.algorithms.averaging.particle_images import ParticleImages, premultiply
from tomoweave.algorithms.fourier import fourier_crop, rfft_from_centred_grid
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import simulate_dataset
from tomoweave.sim.oracle import oracle_map, resolution_to_truth_a, truth_map

say = functools.partial(print, flush=True)
BINNING = 2
BOX = 40
KINDS = ("plain", "ctf_model", "ctf3d", "pseudo")


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


def _optics(truth) -> pseudo.TiltSeriesOptics:
    tilts, acquisition = truth.tilts, truth.acquisition
    return pseudo.TiltSeriesOptics(
        np.array([t.defocus_u_a for t in tilts]), np.array([t.defocus_v_a for t in tilts]),
        np.array([t.astigmatism_angle_deg for t in tilts]),
        np.array([t.pre_exposure_e_a2 + 0.5 * t.dose_e_a2 for t in tilts]),
        acquisition.voltage_kv, acquisition.spherical_aberration_mm,
        acquisition.amplitude_contrast)


def _series_images(folder: Path, truth) -> dict[str, list]:
    """The four kinds of images of one series' particles, and seconds per kind."""
    stack, pixel_a = read_mrc(folder / truth.stack_file)
    contrast = stack / stack.mean(axis=(1, 2), keepdims=True) - 1.0
    matrices, optics = truth.projection_matrices(), _optics(truth)
    positions = np.array([p.position_a for p in truth.placed_particles])
    pixel_out = pixel_a * BINNING
    binned = np.stack([fourier_crop(image, tuple(n // BINNING for n in image.shape))
                       for image in contrast])
    geometry = reconstruction.make_geometry(matrices, binned.shape[1:], pixel_out,
                                            truth.thickness_a + 200.0)
    settings = reconstruction.CtfSettings(optics.defocus_u_a, optics.defocus_v_a,
                                          optics.astigmatism_angle_deg,
                                          voltage_kv=optics.voltage_kv)
    out: dict[str, list] = {k: [] for k in KINDS}
    seconds = dict.fromkeys(KINDS, 0.0)
    start = time.perf_counter()
    tomogram = reconstruction.reconstruct_wbp(lambda i: binned[i], geometry)
    corrected = reconstruction.reconstruct_wbp(lambda i: binned[i], geometry, ctf=settings,
                                               ctf_mode="3d")
    say(f"  {truth.name}: {len(positions)} particles; two tomograms in "
        f"{time.perf_counter() - start:.0f} s (not counted below)")
    _warm_up(contrast, matrices, optics, pixel_a, positions[0])
    for position in positions:
        clock = time.perf_counter()
        box = extraction.extract_particles(tomogram, pixel_out, position[None], BOX,
                                           normalise=False)[0]
        wedge = pseudo.ctf_model_3d(matrices, optics, position, BOX, pixel_out, ctf_on=False)
        out["plain"].append(premultiply(-box, rfft_from_centred_grid(wedge)))
        seconds["plain"] += time.perf_counter() - clock
        clock = time.perf_counter()
        model = pseudo.ctf_model_3d(matrices, optics, position, BOX, pixel_out)
        out["ctf_model"].append(premultiply(box, rfft_from_centred_grid(model)))
        seconds["ctf_model"] += time.perf_counter() - clock
        clock = time.perf_counter()
        box3d = extraction.extract_particles(corrected, pixel_out, position[None], BOX,
                                             normalise=False)[0]
        flipped = pseudo.ctf_model_3d(matrices, optics, position, BOX, pixel_out,
                                      phase_flipped=True)
        out["ctf3d"].append(premultiply(box3d, rfft_from_centred_grid(flipped)))
        seconds["ctf3d"] += time.perf_counter() - clock
        clock = time.perf_counter()
        result = pseudo.pseudo_subtomogram(contrast, matrices, optics, pixel_a, position, BOX,
                                           binning=BINNING)
        out["pseudo"].append((result.data_ft, result.weight))
        seconds["pseudo"] += time.perf_counter() - clock
    return {"images": out, "seconds": seconds,
            "rotations": [p.rotation for p in truth.placed_particles],
            "template": truth.placed_particles[0].template, "pixel_out": pixel_out}


def _warm_up(contrast, matrices, optics, pixel_a, position) -> None:
    """One call of each kernel before timing: numba compiles (or loads its cache) once."""
    pseudo.ctf_model_3d(matrices, optics, position, BOX, pixel_a * BINNING)
    pseudo.pseudo_subtomogram(contrast, matrices, optics, pixel_a, position, BOX,
                              binning=BINNING)


def main() -> None:
    preset = os.environ.get("TOMOWEAVE_BENCH_PRESET", "sta_ctf")
    folder, truths = _dataset(preset)
    images: dict[str, list] = {k: [] for k in KINDS}
    seconds = dict.fromkeys(KINDS, 0.0)
    rotations, template, pixel_out = [], None, None
    for truth in truths:
        part = _series_images(folder, truth)
        for kind in KINDS:
            images[kind] += part["images"][kind]
            seconds[kind] += part["seconds"][kind]
        rotations += part["rotations"]
        template, pixel_out = part["template"], part["pixel_out"]
    reference = truth_map(template, BOX, pixel_out)
    defoci = [t.nominal_defocus_a for t in truths]
    say(f"{preset}: {len(rotations)} particles of {template} in {len(truths)} series, defocus "
        f"{min(defoci) / 1e4:.1f}–{max(defoci) / 1e4:.1f} µm, {truths[0].pixel_size_a:g} Å/px "
        f"binned {BINNING}× to {pixel_out:g} Å/px, box {BOX}")
    say(f"{'kind':10s} {'FSC 0.5 (Å)':>12s} {'FSC 0.143 (Å)':>14s} {'time/plain':>11s}")
    for kind in KINDS:
        data = ParticleImages(np.stack([d for d, _ in images[kind]]),
                              np.stack([w for _, w in images[kind]]), None, pixel_out)
        half, tenth = resolution_to_truth_a(oracle_map(data, np.array(rotations)), reference,
                                            pixel_out)
        say(f"{kind:10s} {half:12.1f} {tenth:14.1f} "
            f"{seconds[kind] / seconds['plain']:11.2f}")


if __name__ == "__main__":
    main()
