"""TEST SCAFFOLDING: scaffold particles (averaging_scaffold.py) written as RELION 3.1-style
subtomograms — a plain box per particle, its signed 3D CTF model as ``rlnCtfImage`` (box³, zero
frequency at the centre), priors perturbed from the true orientations — so the averaging tests
enter through ``import.subtomograms`` like data made elsewhere. The truth (map, poses) stays
with the test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from averaging_scaffold import ScaffoldParticles, make_particles, perturbed, template_map

from tomoweave.algorithms.fourier import centred_grid_from_rfft
from tomoweave.formats.mrc import write_mrc
from tomoweave.formats.relion_subtomograms import write_relion31_subtomograms
from tomoweave.model import Particle, Subtomogram

FIELD_A = 3000.0  # particles spread over a field this wide (x, y), so halves split by region


@dataclass
class StarSet:
    star: Path
    particles: ScaffoldParticles
    priors: np.ndarray  # (N, 3, 3) the rotations written to the STAR


def write_star_set(folder: Path, *, template: str = "4v4r", count: int = 80, box_px: int = 32,
                   pixel_size_a: float = 12.0, noise: float = 0.3,
                   prior_error_deg: tuple[float, float] = (10.0, 20.0),
                   truth: np.ndarray | None = None, seed: int = 0) -> StarSet:
    """Subtomograms of ``template`` at random poses with their STAR, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if truth is None:
        truth = template_map(template, box_px, pixel_size_a)
        truth = truth / truth.max()
    made = make_particles(truth, count, pixel_size_a, noise=noise, seed=seed,
                          keep_observed=True)
    priors = perturbed(made.rotations, *prior_error_deg, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    positions = np.column_stack([rng.uniform(-FIELD_A / 2, FIELD_A / 2, (count, 2)),
                                 rng.uniform(-200, 200, count)])
    items = []
    for i in range(count):
        box = scipy.fft.irfftn(made.observed[i], (box_px,) * 3).astype(np.float32)
        write_mrc(folder / f"p{i:04d}.mrc", box, pixel_size_a)
        write_mrc(folder / f"p{i:04d}_ctf.mrc", centred_grid_from_rfft(made.transfer[i], box_px),
                  pixel_size_a)
        particle = Particle(name=f"p{i:04d}", tomogram="TS_01",
                            position_a=tuple(positions[i]), rotation=priors[i].tolist())
        items.append(Subtomogram(name=particle.name, particle=particle, path=f"p{i:04d}.mrc",
                                 weight_path=f"p{i:04d}_ctf.mrc", pixel_size_a=pixel_size_a,
                                 box_size_px=box_px))
    star = write_relion31_subtomograms(folder / "particles.star", items,
                                       lambda stored: folder / stored)
    return StarSet(star, made, priors)
