"""TEST SCAFFOLDING: particle images made directly from a template, for the averaging tests.

Until the simulated STA datasets of the particle-images work are in (tilt series with CTF per
tilt, dose, and pseudo-subtomograms), the averaging tests build ``ParticleImages``-shaped
arrays here: the template rotated (cubic splines, in real space) and shifted to known poses,
Fourier-transformed, multiplied by a missing wedge × CTF transfer h, with white noise added
to the observation (X = h S + n), then premultiplied (data = h X, weight = h²). This is the
model the averaging code assumes, not an independent simulation of the microscope.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms import fourier, volumes
from tomoweave.geometry.rotations import random_rotations
from tomoweave.geometry.sampling import rotations_from_vectors_deg
from tomoweave.sim.templates import load_template


def template_map(name: str, box_px: int, pixel_size_a: float) -> np.ndarray:
    """A template of ../shared/data/templates_10A at ``pixel_size_a``, cropped to ``box_px``."""
    template = load_template(name, pixel_size_a)
    rescaled = volumes.rescale_volume(template.density, template.pixel_size_a, pixel_size_a)
    return volumes.crop_or_pad(rescaled, box_px)


@dataclass
class ScaffoldParticles:
    data_ft: np.ndarray
    weight: np.ndarray
    rotations: np.ndarray
    shifts_px: np.ndarray
    pixel_size_a: float
    truth: np.ndarray
    observed: np.ndarray | None = None  # (N, B, B, B//2+1) X = h S + n, when kept
    transfer: np.ndarray | None = None  # (N, B, B, B//2+1) h (signed), when kept


def make_particles(truth: np.ndarray, count: int, pixel_size_a: float, *, noise: float = 0.0,
                   tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0),
                   defocus_range_a: tuple[float, float] | None = (20000.0, 40000.0),
                   max_shift_px: float = 1.5, rotations: np.ndarray | None = None,
                   seed: int = 0, keep_observed: bool = False) -> ScaffoldParticles:
    """``count`` particle images of ``truth`` at random (or given) poses, see module docstring.

    ``noise`` is the standard deviation of the white real-space noise added to each observed
    box (the template's peak is 1). ``keep_observed`` also returns X and h (to write plain
    subtomograms with their signed 3D CTF model, as RELION 3.1 does).
    """
    rng = np.random.default_rng(seed)
    box = truth.shape[0]
    rotations = random_rotations(count, rng) if rotations is None else rotations
    shifts = rng.uniform(-max_shift_px, max_shift_px, (count, 3))
    kz, ky, kx = fourier.rfft_frequencies((box,) * 3)
    shape = (count, box, box, box // 2 + 1)
    data, weight = np.empty(shape, np.complex64), np.empty(shape, np.float32)
    kept = (np.empty(shape, np.complex64), np.empty(shape, np.float32)) if keep_observed \
        else (None, None)
    for i in range(count):
        spectrum = scipy.fft.rfftn(volumes.rotate_volume(truth, rotations[i]))
        spectrum *= np.exp(-2j * np.pi * (kx * shifts[i, 0] + ky * shifts[i, 1]
                                          + kz * shifts[i, 2]))
        ctf = None if defocus_range_a is None else {"defocus_a": rng.uniform(*defocus_range_a)}
        transfer = fourier.wedge_ctf_weight(box, pixel_size_a, tilt_range_deg, None, ctf)
        observed = transfer * spectrum
        if noise:
            observed = observed + noise * scipy.fft.rfftn(
                rng.standard_normal((box,) * 3).astype(np.float32)) * (transfer != 0)
        data[i], weight[i] = transfer * observed, transfer * transfer
        if keep_observed:
            kept[0][i], kept[1][i] = observed, transfer
    return ScaffoldParticles(data, weight, rotations, shifts, pixel_size_a, truth, *kept)


def perturbed(rotations: np.ndarray, low_deg: float, high_deg: float,
              seed: int = 1) -> np.ndarray:
    """Each rotation turned about a random axis by an angle drawn in [low, high] degrees."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(len(rotations), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = rng.uniform(low_deg, high_deg, (len(rotations), 1))
    return np.einsum("nij,njk->nik", rotations, rotations_from_vectors_deg(axes * angles))
