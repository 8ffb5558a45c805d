"""Oracle reconstruction at the true poses and FSC against the true density.

How tests and benchmarks prove that a kind of particle image (ParticleImages) carries the
signal, independently of any alignment: averaging's reconstruction from poses
(algorithms/averaging/reconstruction.py) with the true rotation of each particle, compared with
the true density by the Fourier shell correlation (algorithms/fourier.py). Oracle-relative
acceptance figures of averaging (gold-standard resolution within 1.15× of the oracle's) are
measured against this map.

:func:`compare_particle_images` builds every kind of particle image of simulated series
(KINDS: plain boxes of a WBP tomogram with the wedge only, the same with each particle's 3D
CTF model, boxes of a 3D-CTF-corrected tomogram with its model, pseudo-subtomograms) and
scores each by its oracle map's resolution to the truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.algorithms import extraction, reconstruction
from tomoweave.algorithms.averaging import pseudo_subtomograms as pseudo
from tomoweave.algorithms.averaging.particle_images import ParticleImages, premultiply
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.fourier import (
    fourier_crop,
    fourier_shell_correlation,
    resolution_at_threshold,
    rfft_from_centred_grid,
)
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim.templates import add_particle, load_template
from tomoweave.sim.truth import SeriesTruth

KINDS = ("plain", "ctf_model", "ctf3d", "pseudo")


def oracle_map(images: ParticleImages, rotations: np.ndarray,
               regulariser: float = 0.02) -> np.ndarray:
    """Reconstruction of ``images`` at their true ``rotations`` (N, 3, 3, reference ->
    particle), box centres at the true positions; ``regulariser`` is the smallest Wiener
    constant as a fraction of each shell's mean weight (scale-free, so kinds of images with
    differently scaled weights compare fairly). Returns box³ float32, reference frame."""
    builder = Reconstructor(images.box_px)
    builder.add(images.data_ft, images.weight, np.asarray(rotations, dtype=float))
    return builder.reconstruct(epsilon=regulariser)


def truth_map(template: str, box_px: int, pixel_size_a: float) -> np.ndarray:
    """The template drawn at the centre of a box³ grid, reference orientation."""
    volume = np.zeros((box_px,) * 3, dtype=np.float32)
    add_particle(volume, pixel_size_a, load_template(template, pixel_size_a), np.zeros(3),
                 np.eye(3), 1.0)
    return volume


def resolution_to_truth_a(volume: np.ndarray, truth: np.ndarray, pixel_size_a: float,
                          thresholds: tuple[float, ...] = (0.5, 0.143)) -> tuple[float, ...]:
    """Map-to-truth FSC resolution (Å) at each threshold."""
    curve = fourier_shell_correlation(volume, truth)
    return tuple(resolution_at_threshold(curve, volume.shape[0], pixel_size_a, t)
                 for t in thresholds)


def compare_particle_images(folder: Path, truths: list[SeriesTruth], box_px: int,
                            binning: int = 2) -> dict[str, dict[str, Any]]:
    """Per kind: ``resolution_a`` (FSC 0.5, 0.143 of the oracle map against the truth, Å) and
    ``seconds`` (extraction and weights, summed over particles), for all particles of the
    series (one template: the first particle's)."""
    images: dict[str, list] = {k: [] for k in KINDS}
    seconds = dict.fromkeys(KINDS, 0.0)
    rotations: list = []
    template, pixel_out = None, None
    for truth in truths:
        part = series_particle_images(Path(folder), truth, box_px, binning)
        for kind in KINDS:
            images[kind] += part["images"][kind]
            seconds[kind] += part["seconds"][kind]
        rotations += part["rotations"]
        template, pixel_out = part["template"], part["pixel_out"]
    reference = truth_map(template, box_px, pixel_out)
    results = {}
    for kind in KINDS:
        data = ParticleImages(np.stack([d for d, _ in images[kind]]),
                              np.stack([w for _, w in images[kind]]), None, pixel_out)
        results[kind] = {"resolution_a": resolution_to_truth_a(
            oracle_map(data, np.array(rotations)), reference, pixel_out),
            "seconds": seconds[kind], "particles": len(rotations),
            "template": template, "pixel_size_a": pixel_out}
    return results


def true_optics(truth: SeriesTruth) -> pseudo.TiltSeriesOptics:
    """Per-tilt CTF (defocus at the tilt axis) and mid-exposure of a simulated series."""
    tilts, acquisition = truth.tilts, truth.acquisition
    return pseudo.TiltSeriesOptics(
        np.array([t.defocus_u_a for t in tilts]), np.array([t.defocus_v_a for t in tilts]),
        np.array([t.astigmatism_angle_deg for t in tilts]),
        np.array([t.pre_exposure_e_a2 + 0.5 * t.dose_e_a2 for t in tilts]),
        acquisition.voltage_kv, acquisition.spherical_aberration_mm,
        acquisition.amplitude_contrast)


def series_particle_images(folder: Path, truth: SeriesTruth, box_px: int,
                           binning: int = 2) -> dict[str, Any]:
    """Every kind of particle image (KINDS) of one simulated series' particles, at the true
    positions, with the seconds each kind took (extraction and weight; not the tomograms).

    Returns a dict: ``images`` kind -> list of (data_ft, weight) (rfft grids), ``seconds``
    kind -> float, ``rotations`` (true), ``template``, ``pixel_out`` (Å/px of the boxes).
    """
    stack, pixel_a = read_mrc(folder / truth.stack_file)
    contrast = stack / stack.mean(axis=(1, 2), keepdims=True) - 1.0
    matrices, optics = truth.projection_matrices(), true_optics(truth)
    positions = np.array([p.position_a for p in truth.placed_particles])
    pixel_out = pixel_a * binning
    binned = np.stack([fourier_crop(image, tuple(n // binning for n in image.shape))
                       for image in contrast])
    geometry = reconstruction.make_geometry(matrices, binned.shape[1:], pixel_out,
                                            truth.thickness_a + 200.0)
    settings = reconstruction.CtfSettings(optics.defocus_u_a, optics.defocus_v_a,
                                          optics.astigmatism_angle_deg,
                                          voltage_kv=optics.voltage_kv)
    out: dict[str, list] = {k: [] for k in KINDS}
    seconds = dict.fromkeys(KINDS, 0.0)
    tomogram = reconstruction.reconstruct_wbp(lambda i: binned[i], geometry)
    corrected = reconstruction.reconstruct_wbp(lambda i: binned[i], geometry, ctf=settings,
                                               ctf_mode="3d")
    warm_up(contrast, matrices, optics, pixel_a, positions[0], box_px, binning)
    for position in positions:
        clock = time.perf_counter()
        box = extraction.extract_particles(tomogram, pixel_out, position[None], box_px,
                                           normalise=False)[0]
        wedge = pseudo.ctf_model_3d(matrices, optics, position, box_px, pixel_out, ctf_on=False)
        out["plain"].append(premultiply(-box, rfft_from_centred_grid(wedge)))
        seconds["plain"] += time.perf_counter() - clock
        clock = time.perf_counter()
        model = pseudo.ctf_model_3d(matrices, optics, position, box_px, pixel_out)
        out["ctf_model"].append(premultiply(box, rfft_from_centred_grid(model)))
        seconds["ctf_model"] += time.perf_counter() - clock
        clock = time.perf_counter()
        box3d = extraction.extract_particles(corrected, pixel_out, position[None], box_px,
                                             normalise=False)[0]
        flipped = pseudo.ctf_model_3d(matrices, optics, position, box_px, pixel_out,
                                      phase_flipped=True)
        out["ctf3d"].append(premultiply(box3d, rfft_from_centred_grid(flipped)))
        seconds["ctf3d"] += time.perf_counter() - clock
        clock = time.perf_counter()
        result = pseudo.pseudo_subtomogram(contrast, matrices, optics, pixel_a, position, box_px,
                                           binning=binning)
        out["pseudo"].append((result.data_ft, result.weight))
        seconds["pseudo"] += time.perf_counter() - clock
    return {"images": out, "seconds": seconds,
            "rotations": [p.rotation for p in truth.placed_particles],
            "template": truth.placed_particles[0].template, "pixel_out": pixel_out}


def warm_up(contrast, matrices, optics, pixel_a, position, box_px: int, binning: int) -> None:
    """One call of each kernel before timing: numba compiles (or loads its cache) once."""
    pseudo.ctf_model_3d(matrices, optics, position, box_px, pixel_a * binning)
    pseudo.pseudo_subtomogram(contrast, matrices, optics, pixel_a, position, box_px,
                              binning=binning)
