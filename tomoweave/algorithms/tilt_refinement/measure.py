"""Compare every particle with its own half's reference in every tilt, and measure where it is.

:func:`compare_particles` cuts the patches (at the current geometry) and samples each
particle's reference slices; :func:`measure_displacements` correlates them with the models
h·S and returns each particle's displacement in each tilt with its information matrix. Each
particle is compared only with the reference of its own half set (gold standard): nothing a
half learns comes from the other half's map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoweave.algorithms.averaging.pseudo_subtomograms import TiltSeriesOptics
from tomoweave.algorithms.tilt_refinement import shifts
from tomoweave.algorithms.tilt_refinement.geometry import TiltGeometry
from tomoweave.algorithms.tilt_refinement.patches import BandSetup, particle_patches


@dataclass
class Comparison:
    """Band values of every particle's patches and reference slices.

    patches, slices : (N, T, n) complex64 — X and the CTF-free reference slice S.
    heights_a : (N, T) each particle's height in each tilt, Å.
    weights : (T, n) float32 — 1/σ² of the noise per ring and tilt.
    setups : {half: BandSetup}; half_sets (N,) which one each particle uses.
    """

    patches: np.ndarray
    slices: np.ndarray
    heights_a: np.ndarray
    weights: np.ndarray
    setups: dict
    half_sets: np.ndarray

    @property
    def setup(self) -> BandSetup:
        return next(iter(self.setups.values()))

    def models(self, optics: TiltSeriesOptics, p: int,
               defocus_offset_a: np.ndarray | float = 0.0) -> np.ndarray:
        """h·S of particle ``p`` in every tilt, (T, n)."""
        return self.slices[p] * self.setup.transfers(optics, self.heights_a[p],
                                                     defocus_offset_a)


def compare_particles(images: np.ndarray, geometry: TiltGeometry, image_pixel_size_a: float,
                      positions_a: np.ndarray, rotations: np.ndarray, half_sets: np.ndarray,
                      references: dict, *, box_px: int, binning: float = 1.0,
                      resolution_a: float, low_resolution_a: float = 200.0,
                      motion_a: np.ndarray | None = None) -> Comparison:
    """Patches and reference slices of all particles at the current geometry.

    Parameters
    ----------
    images : (T, ny, nx) tilt images in contrast units, in the order of the geometry.
    geometry : TiltGeometry (rigid alignment + deformation).
    image_pixel_size_a : Å per pixel of ``images``.
    positions_a, rotations : (N, 3), (N, 3, 3) particle positions (Å from the tomogram
        centre) and rotations (reference -> particle).
    half_sets : (N,) the half set (e.g. 1, 2) of each particle.
    references : {half: (B, B, B) map} at ``image_pixel_size_a × binning`` Å/px, box B =
        ``box_px``, reference frame; each particle uses its half's.
    resolution_a, low_resolution_a : the band compared, Å.
    motion_a : (N, T, 2) each particle's own displacement beyond the geometry, Å, optional.
    """
    positions = np.asarray(positions_a, dtype=float).reshape(-1, 3)
    halves = np.asarray(half_sets)
    missing = set(np.unique(halves).tolist()) - set(references)
    if missing:
        raise ValueError(f"half sets {sorted(missing)} have no reference")
    matrices = geometry.matrices()
    offsets = geometry.offsets_a(positions)
    if motion_a is not None:
        offsets = offsets + motion_a
    patches, slices, heights, setups = [], [], [], {}
    for p, position in enumerate(positions):
        part = particle_patches(images, matrices, image_pixel_size_a, position, box_px,
                                binning=binning, offsets_a=offsets[p])
        half = halves[p].item()
        if half not in setups:
            setups[half] = BandSetup(np.asarray(references[half]), part.pixel_size_a,
                                     resolution_a, low_resolution_a)
        setup = setups[half]
        patches.append(setup.band(part.spectra))
        slices.append(setup.slices(rotations[p], part.rotations))
        heights.append(part.heights_a)
    patches = np.stack(patches)
    setup = next(iter(setups.values()))
    return Comparison(patches, np.stack(slices), np.stack(heights),
                      setup.noise_weights(patches), setups, halves)


@dataclass
class Displacements:
    """Where each particle was found relative to the geometry's prediction.

    displacements_a : (N, T, 2) x y, Å;  information : (N, T, 2, 2) Å⁻² (inverse covariance);
    tilt_shifts_a : (T, 2) the best common displacement of each tilt (summed correlations).
    """

    displacements_a: np.ndarray
    information: np.ndarray
    tilt_shifts_a: np.ndarray


def measure_displacements(comparison: Comparison, optics: TiltSeriesOptics, *,
                          search_radius_px: float = 4.0, particle_radius_px: float = 1.5,
                          step_px: float = 0.25, defocus_offsets_a: np.ndarray | None = None
                          ) -> Displacements:
    """Each particle's displacement in each tilt (patch pixels of the comparison).

    The summed correlation of all particles of a tilt gives its common displacement (within
    ``search_radius_px``); each particle's own maximum is then sought within
    ``particle_radius_px`` of it. The information of a displacement is a·H (shifts module),
    with the amplitude a clipped to 0 … 1.
    """
    setup = comparison.setup
    count, n_tilts, _ = comparison.patches.shape
    offsets = shifts.window_offsets_px(search_radius_px, step_px)
    windows = np.empty((count, n_tilts, len(offsets), len(offsets)), dtype=np.float32)
    norms = np.empty((count, n_tilts))
    for p in range(count):
        offset = 0.0 if defocus_offsets_a is None else defocus_offsets_a[p]
        models = comparison.models(optics, p, offset)
        product = np.zeros((n_tilts, setup.box_px, setup.box_px), dtype=np.complex64)
        product[:, setup.mask] = comparison.weights * comparison.patches[p] * np.conj(models)
        windows[p] = shifts.correlation_windows(product, setup.box_px, offsets)
        norms[p] = np.sum(comparison.weights * np.abs(models) ** 2, axis=1)
    pixel = setup.pixel_size_a
    tilt_peaks = shifts.window_peaks(windows.sum(axis=0), offsets)
    displacements = np.empty((count, n_tilts, 2))
    information = np.empty((count, n_tilts, 2, 2))
    for t in range(n_tilts):
        peaks = shifts.window_peaks(windows[:, t], offsets, particle_radius_px,
                                    tilt_peaks.shift_px[t])
        # the amplitude a of the log-likelihood a·C − a²|M|²/2, at most 1: references are in
        # the data's units (X = h S), and a free amplitude would give a model without signal
        # (pure noise, FSC ~ 0: M ~ 0) an information that does not vanish
        scale = np.clip(peaks.value / np.maximum(norms[:, t], 1e-30), 0.0, 1.0)
        displacements[:, t] = peaks.shift_px * pixel
        information[:, t] = peaks.curvature * scale[:, None, None] / pixel**2
    return Displacements(displacements, information, tilt_peaks.shift_px * pixel)
