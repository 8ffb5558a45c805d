"""Starting references for refinement: from known orientations, from an imported volume, or
reference-free from random orientations.

- :func:`from_orientations`: all particles reconstructed at their current poses (e.g. the
  picker's), symmetrised and low-passed.
- :func:`from_volume`: an external map brought to the particles' pixel size and box and
  low-passed (the caller warns about reference bias).
- :func:`reference_free`: random orientations, then rounds of stochastic refinement: each
  round a random subset of the particles is searched globally against the current model at a
  low resolution, the subset is reconstructed, and the model moves part of the way towards it
  (RELION's SGD/VDAM idea); the resolution limit rises over the rounds. Subtomograms are 3D,
  so the hand is fixed by the data: a mirrored model scores worse and is not reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging import sources
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.averaging.scoring import ScoringSetup, search_poses
from tomoweave.algorithms.volumes import crop_or_pad, rescale_volume, spherical_mask
from tomoweave.geometry.rotations import random_rotations
from tomoweave.geometry.sampling import angular_sampling
from tomoweave.geometry.symmetry import symmetry_operators


def lowpassed(volume: np.ndarray, pixel_size_a: float, resolution_a: float) -> np.ndarray:
    """``volume`` with a soft low-pass at ``resolution_a`` (cosine edge of 2 Fourier voxels)."""
    box = volume.shape[0]
    spectrum = scipy.fft.rfftn(volume, workers=-1)
    spectrum *= fourier.lowpass_filter(volume.shape, pixel_size_a, resolution_a,
                                       edge_width=2.0 / box)
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)


def from_orientations(source: sources.ImageSource, rotations: np.ndarray,
                      shifts_a: np.ndarray | None = None, *, symmetry: str = "C1",
                      resolution_a: float = 40.0, indices: np.ndarray | None = None,
                      batch_size: int = 64) -> np.ndarray:
    """The particles (all, or those at ``indices``) reconstructed at the given poses,
    symmetrised, low-passed.

    Parameters
    ----------
    source : ImageSource
        The particle images (box B at ``source.pixel_size_a``).
    rotations : (N, 3, 3) float
        Reference -> particle rotations (e.g. the picker's orientations), all particles.
    shifts_a : (N, 3) float, optional
        Offsets (x, y, z) of the particles' centres from their box centres, Å.
    symmetry : str
        Point group applied to the reconstruction.
    resolution_a : float
        Low-pass of the result, Å.
    indices : (n,) int, optional
        The particles to use (default: all).
    """
    box, pixel = source.box_px, source.pixel_size_a
    rotations = np.asarray(rotations, dtype=float).reshape(-1, 3, 3)
    shifts = np.zeros((len(rotations), 3)) if shifts_a is None else np.asarray(shifts_a, float)
    builder = Reconstructor(box)
    chosen = np.arange(source.count) if indices is None else np.asarray(indices)
    for batch in sources.batches(chosen, batch_size):
        data, weight = source.batch(batch, box)
        builder.add(data, weight, rotations[batch], shifts[batch] / pixel)
    return lowpassed(builder.reconstruct(symmetry_operators(symmetry)), pixel, resolution_a)


def from_volume(volume: np.ndarray, volume_pixel_a: float, pixel_size_a: float, box_px: int,
                resolution_a: float) -> np.ndarray:
    """An imported map at the particles' pixel size and box, low-passed to ``resolution_a``.

    Parameters
    ----------
    volume : (Z, Y, X) float, a cube
    volume_pixel_a, pixel_size_a : float
        Pixel sizes of the map and of the particles, Å.
    box_px : int
        The particles' box.
    resolution_a : float
        Low-pass, Å (never finer than twice ``pixel_size_a``).
    """
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"reference of shape {volume.shape[::-1]} (x, y, z): expected a cube")
    rescaled = volume if np.isclose(volume_pixel_a, pixel_size_a, rtol=1e-4) else \
        rescale_volume(volume, volume_pixel_a, pixel_size_a)
    boxed = crop_or_pad(np.asarray(rescaled, dtype=np.float32), box_px)
    return lowpassed(boxed, pixel_size_a, max(resolution_a, 2.0 * pixel_size_a))


@dataclass
class ReferenceFreeSettings:
    """Options of :func:`reference_free`; Å and degrees."""

    particle_diameter_a: float
    symmetry: str = "C1"
    rounds: int = 12
    subset_size: int = 64
    start_resolution_a: float = 60.0
    final_resolution_a: float = 30.0
    angular_step_deg: float = 20.0
    shift_range_a: float = 0.0
    step_fraction: float = 0.5
    n_threads: int = 2
    seed: int = 0


def reference_free(source: sources.ImageSource, settings: ReferenceFreeSettings, *,
                   progress: Callable[[float, str], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A model from particles of unknown orientation (see the module docstring).

    Returns
    -------
    model : (B, B, B) float32
        Low-passed to ``final_resolution_a``.
    rotations : (N, 3, 3)
        Every particle's best orientation against the final model (a global search).
    shifts_a : (N, 3)
    """
    rng = np.random.default_rng(settings.seed)
    pixel, count = source.pixel_size_a, source.count
    rotations = random_rotations(count, rng)
    shifts = np.zeros((count, 3))
    model = from_orientations(source, rotations, shifts, symmetry=settings.symmetry,
                              resolution_a=settings.start_resolution_a)
    grid = angular_sampling(settings.angular_step_deg, settings.symmetry)
    for round_index in range(settings.rounds):
        fraction = round_index / max(1, settings.rounds - 1)
        resolution = settings.start_resolution_a * (
            settings.final_resolution_a / settings.start_resolution_a) ** fraction
        subset = rng.choice(count, min(settings.subset_size, count), replace=False)
        _global_search(source, model, subset, grid, resolution, rotations, shifts, settings)
        update = from_orientations(source, rotations, shifts, symmetry=settings.symmetry,
                                   resolution_a=resolution, indices=subset)
        update *= _scale(model, update)
        model = ((1 - settings.step_fraction) * model + settings.step_fraction * update)
        model = lowpassed(model, pixel, resolution).astype(np.float32)
        if progress is not None:
            progress((round_index + 1) / (settings.rounds + 1),
                     f"reference-free round {round_index + 1} of {settings.rounds}: "
                     f"{resolution:.0f} Å")
    everyone = np.arange(count)
    _global_search(source, model, everyone, grid, settings.final_resolution_a, rotations,
                   shifts, settings)
    model = from_orientations(source, rotations, shifts, symmetry=settings.symmetry,
                              resolution_a=settings.final_resolution_a)
    if progress is not None:
        progress(1.0, "reference-free model done")
    return model, rotations, shifts


def _scale(model: np.ndarray, update: np.ndarray) -> float:
    """The factor that gives ``update`` the model's power (reconstructions of subsets differ
    in scale only through the Wiener regulariser)."""
    power = float(np.sum(update.astype(np.float64) ** 2))
    return float(np.sqrt(np.sum(model.astype(np.float64) ** 2) / power)) if power > 0 else 1.0


def _global_search(source, model, indices, grid, resolution_a, rotations, shifts,
                   settings: ReferenceFreeSettings) -> None:
    """Best pose of the particles at ``indices`` over ``grid`` at ``resolution_a``; in place."""
    box, pixel = source.box_px, source.pixel_size_a
    radius = box * pixel / resolution_a
    work_box = int(min(box, max(8, 2 * int(np.ceil(radius + 2)) + 4)))
    work_box += work_box % 2
    work_box = min(work_box, box)
    work_pixel = pixel * box / work_box
    reference = fourier.fourier_crop(model, work_box)
    mask_radius = min(0.5 * settings.particle_diameter_a / work_pixel, work_box / 2 - 2)
    reference = reference * spherical_mask(work_box, mask_radius, 2.0)
    setup = ScoringSetup(reference, min(radius + 1, work_box // 2 - 1),
                         np.ones(work_box // 2 + 1))
    for batch in sources.batches(np.asarray(indices), 64):
        data, weight = source.batch(batch, work_box)
        found = search_poses(data, weight, setup, grid, shift_centres_px=np.zeros((len(batch), 3)),
                             max_shift_px=settings.shift_range_a / work_pixel,
                             n_threads=settings.n_threads)
        rotations[batch] = grid[found.index]
        shifts[batch] = found.shifts_px * work_pixel
