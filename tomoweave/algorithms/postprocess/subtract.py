"""Particle subtraction: remove (part of) the average from each particle at its refined pose.

Each particle image is CTF-premultiplied (``averaging.particle_images``): data D = h X with
weight W = h², so the model of the data is W · M for a map M in the particle's frame. The
whole average A at the particle's pose (rotated and shifted) gives the per-particle amplitude

    a = Re Σ conj(A) D / Σ W |A|²

the least-squares scale of h A against the observation X (noise h n: each Fourier voxel
weighted by 1/W), so that particles with more or less contrast lose exactly their share; the
whole average is fitted, not only the masked part, because the particle holds all of it. The
subtracted part is a W (m A) with m the mask of what to remove (e.g. the membrane, or the
complex); the remainder keeps the particle's weight W: a premultiplied particle image again.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.volumes import rotate_volume


def map_at_pose(volume: np.ndarray, rotation: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """rfftn spectrum of ``volume`` turned by ``rotation`` about index B // 2 and moved by
    ``shift_px`` (x, y, z): the particle's frame of ``averaging.reconstruction`` (its centre at
    box // 2 + shift), phase origin at voxel 0 as in ParticleImages.data_ft.

    Parameters
    ----------
    volume : (B, B, B) float32
    rotation : (3, 3) active rotation reference → particle, (x, y, z)
    shift_px : (3,) x, y, z in pixels
    """
    box = volume.shape[0]
    spectrum = scipy.fft.rfftn(rotate_volume(volume, rotation), workers=-1)
    kz, ky, kx = fourier.rfft_frequencies((box,) * 3)
    shift = np.asarray(shift_px, dtype=float)
    phase = np.exp(-2j * np.pi * (kx * shift[0] + ky * shift[1] + kz * shift[2]))
    return (spectrum * phase).astype(np.complex64)


def subtract_from_particles(data_ft: np.ndarray, weight: np.ndarray, average: np.ndarray,
                            rotations: np.ndarray, shifts_px: np.ndarray | None = None, *,
                            mask: np.ndarray | None = None,
                            fit_amplitude: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied particle images with the (masked) average at their poses subtracted.

    Parameters
    ----------
    data_ft : (N, B, B, B // 2 + 1) complex64
        CTF-premultiplied particle spectra (ParticleImages.data_ft).
    weight : (N, B, B, B // 2 + 1) float32
        Their weights Σ h² (ParticleImages.weight).
    average : (B, B, B) float32
        The average in the reference frame, on the particles' grid and scale of density.
    rotations : (N, 3, 3)
        Refined poses, active reference → particle.
    shifts_px : (N, 3), optional
        Refined shifts (x, y, z) in pixels of the box; None: centred.
    mask : (B, B, B) float, optional
        Soft mask (reference frame) of the part to subtract; None subtracts the whole average.
    fit_amplitude : bool
        Fit a scale per particle (else a = 1).

    Returns
    -------
    remainder_ft : (N, B, B, B // 2 + 1) complex64, premultiplied, same weights.
    scales : (N,) float64, the fitted amplitudes.
    """
    rotations = np.asarray(rotations, dtype=float).reshape(-1, 3, 3)
    count, box = data_ft.shape[0], data_ft.shape[1]
    if len(rotations) != count or average.shape != (box,) * 3:
        raise ValueError(f"subtraction: {count} particles of box {box}, {len(rotations)} poses, "
                         f"average {average.shape}")
    shifts = np.zeros((count, 3)) if shifts_px is None else np.asarray(shifts_px, float)
    average = np.asarray(average, np.float32)
    multiplicity = fourier.rfft_multiplicity(box)
    remainder = np.empty_like(data_ft)
    scales = np.ones(count)
    for i in range(count):
        whole = map_at_pose(average, rotations[i], shifts[i])
        if fit_amplitude:
            numerator = float(np.sum(multiplicity * (np.conj(whole) * data_ft[i]).real))
            denominator = float(np.sum(multiplicity * weight[i] * np.abs(whole) ** 2))
            scales[i] = numerator / denominator if denominator > 0 else 0.0
        part = whole if mask is None else map_at_pose(average * mask, rotations[i], shifts[i])
        remainder[i] = data_ft[i] - scales[i] * weight[i] * part
    return remainder, scales
