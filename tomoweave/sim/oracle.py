"""Oracle reconstruction at the true poses and FSC against the true density.

How tests and benchmarks prove that a kind of particle image (ParticleImages) carries the
signal, independently of any alignment: averaging's reconstruction from poses
(algorithms/averaging/reconstruction.py) with the true rotation of each particle, compared with
the true density by the Fourier shell correlation (algorithms/fourier.py). Oracle-relative
acceptance figures of averaging (gold-standard resolution within 1.15× of the oracle's) are
measured against this map.
"""

from __future__ import annotations

import numpy as np

from tomoweave.algorithms.averaging.particle_images import ParticleImages
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.fourier import fourier_shell_correlation, resolution_at_threshold
from tomoweave.sim.templates import add_particle, load_template


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
