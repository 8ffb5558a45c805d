"""Oracle reconstruction at the true poses and FSC against the true density.

How tests and benchmarks prove that a kind of particle image (ParticleImages) carries the
signal, independently of any alignment:

    map = F⁻¹[ Σ_i R_i⁻¹(data_ft_i) / (Σ_i R_i⁻¹(weight_i) + ε) ]

with the true rotation R_i of each particle (reference -> particle), compared with the true
density by the Fourier shell correlation. Oracle-relative acceptance figures of averaging
(gold-standard resolution within 1.15× of the oracle's) are measured against this map.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from tomoweave.algorithms.averaging.particle_images import ParticleImages
from tomoweave.algorithms.fourier import (
    centred_grid_from_rfft,
    rfft_frequencies,
    rfft_from_centred_grid,
)
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.sim.templates import add_particle, load_template


def oracle_map(images: ParticleImages, rotations: np.ndarray,
               regulariser: float = 0.02) -> np.ndarray:
    """Reconstruction at the true poses; ε = ``regulariser`` × the mean summed weight.

    Parameters
    ----------
    images : ParticleImages
        N particle images whose box centres are the particles' true positions.
    rotations : (N, 3, 3)
        True rotations (reference -> particle).
    regulariser : float
        Wiener-like constant relative to the mean summed weight (scale-free, so kinds of
        images with differently scaled weights compare fairly).

    Returns
    -------
    map : (B, B, B) float32, reference frame, centre at index B // 2.
    """
    box = images.box_px
    data = np.zeros((box, box, box // 2 + 1), dtype=np.complex128)
    weight = np.zeros((box, box, box // 2 + 1), dtype=np.float64)
    for index, rotation in enumerate(rotations):
        back = np.asarray(rotation).T  # particle frame -> reference frame
        real = rotate_volume(images.real_space(index), back, order=3)
        data += scipy.fft.rfftn(real, workers=-1)
        centred = centred_grid_from_rfft(images.weight[index], box)
        weight += rfft_from_centred_grid(rotate_volume(centred, back, order=1))
    epsilon = regulariser * float(weight.mean())
    return scipy.fft.irfftn(data / (weight + epsilon), (box,) * 3, workers=-1).astype(np.float32)


def truth_map(template: str, box_px: int, pixel_size_a: float) -> np.ndarray:
    """The template drawn at the centre of a box³ grid, reference orientation."""
    volume = np.zeros((box_px,) * 3, dtype=np.float32)
    add_particle(volume, pixel_size_a, load_template(template, pixel_size_a), np.zeros(3),
                 np.eye(3), 1.0)
    return volume


def fsc(map1: np.ndarray, map2: np.ndarray) -> np.ndarray:
    """FSC per shell (index = shell radius in Fourier pixels, up to box // 2)."""
    box = map1.shape[0]
    f1, f2 = scipy.fft.rfftn(map1), scipy.fft.rfftn(map2)
    kz, ky, kx = rfft_frequencies(map1.shape)
    shell = np.rint(np.sqrt(kz**2 + ky**2 + kx**2) * box).astype(int)
    count = box // 2 + 1
    keep = shell < count
    cross = np.bincount(shell[keep], (f1 * np.conj(f2)).real[keep], count)
    p1 = np.bincount(shell[keep], (np.abs(f1) ** 2)[keep], count)
    p2 = np.bincount(shell[keep], (np.abs(f2) ** 2)[keep], count)
    return cross / np.sqrt(np.maximum(p1 * p2, 1e-30))


def resolution_at(curve: np.ndarray, threshold: float, box_px: int, pixel_size_a: float) -> float:
    """Resolution (Å) where the FSC first falls below ``threshold`` (linear between shells)."""
    for shell in range(1, len(curve)):
        if curve[shell] < threshold:
            before = curve[shell - 1]
            fraction = (before - threshold) / max(before - curve[shell], 1e-12)
            radius = shell - 1 + fraction
            return box_px * pixel_size_a / max(radius, 1e-6)
    return 2 * pixel_size_a
