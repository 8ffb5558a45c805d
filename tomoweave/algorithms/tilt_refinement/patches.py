"""A particle's 2D patches in every tilt and the reference's projections at its pose.

A particle at ``position_a`` (Å from the tomogram centre) with rotation R (reference ->
particle) is seen in tilt t (projection matrix P_t, rotation part Q_t) at the image point
P_t · position; the patch cut there has the centred spectrum X_t(q) (origin at that point,
pseudo_subtomograms.patch_spectrum). Its model is the reference's central slice, multiplied by
the tilt's transfer at the particle's defocus:

    M_t(q) = h_t(q) · S((Q_t R)ᵀ (qx, qy, 0))

(the slice theorem, as pseudo-subtomograms insert it). Comparisons happen on the frequencies
of a band (``BandSetup``), whitened by the noise power of each ring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoweave.algorithms.averaging import gridding
from tomoweave.algorithms.averaging.pseudo_subtomograms import (
    TiltSeriesOptics,
    patch_spectrum,
    source_box_px,
)
from tomoweave.algorithms.fourier import centred_frequencies_2d, tilt_transfers
from tomoweave.geometry.projection import particle_in_tilts

PAD = 2


@dataclass
class TiltPatches:
    """One particle in all tilts.

    spectra : (T, B, B) complex64, centred spectra of the patches (origin at ``image_a``).
    image_a : (T, 2) where the geometry puts the particle in each image, Å from its centre.
    heights_a : (T,) its height along the beam (defocus offset from the tilt axis), Å.
    rotations : (T, 3, 3) rotation part of each projection matrix.
    pixel_size_a : float, Å per pixel of the patches.
    """

    spectra: np.ndarray
    image_a: np.ndarray
    heights_a: np.ndarray
    rotations: np.ndarray
    pixel_size_a: float


def particle_patches(images: np.ndarray, matrices: np.ndarray, image_pixel_size_a: float,
                     position_a: np.ndarray, box_px: int, *, binning: float = 1.0,
                     offsets_a: np.ndarray | None = None) -> TiltPatches:
    """The patches of one particle in every tilt.

    Parameters
    ----------
    images : (T, ny, nx) float32
        Tilt images in contrast units (counts / mean - 1), in the order of ``matrices``.
    matrices : (T, 4, 4)
        Projection matrices (tomogram Å -> image Å).
    image_pixel_size_a : float
        Pixel size of the tilt images, Å.
    position_a : (3,)
        The particle, Å from the tomogram centre.
    box_px : int
        Patch box (even) at ``image_pixel_size_a × binning`` Å/px.
    binning : float ≥ 1
        Patches are cut at ``source_box_px(box_px, binning)`` and their spectra cropped.
    offsets_a : (T, 2), optional
        Extra displacement of the particle in each image (x, y), Å (deformation, motion).
    """
    source_px = source_box_px(box_px, binning)
    pixel_out_a = image_pixel_size_a * source_px / box_px
    image_a, heights_a, rotations = particle_in_tilts(matrices, position_a)
    if offsets_a is not None:
        image_a = image_a + np.asarray(offsets_a, dtype=float).reshape(-1, 2)
    n_tilts, ny, nx = images.shape
    centres_px = image_a / image_pixel_size_a + np.array([nx // 2, ny // 2])
    spectra = np.empty((n_tilts, box_px, box_px), dtype=np.complex64)
    for t in range(n_tilts):
        spectra[t] = patch_spectrum(images[t], centres_px[t], source_px, box_px)
    return TiltPatches(spectra, image_a, heights_a, rotations, pixel_out_a)


class BandSetup:
    """The frequencies a comparison uses and the reference's padded grid.

    Parameters
    ----------
    reference : (B, B, B) float32
        The half map, reference frame, at the patches' pixel size and box.
    pixel_size_a : float
        Its pixel size (= the patches'), Å.
    resolution_a : float
        Highest resolution compared (the half maps' FSC resolution), Å.
    low_resolution_a : float
        Lowest resolution compared, Å (the patch's mean and largest scales carry ice).
    """

    def __init__(self, reference: np.ndarray, pixel_size_a: float, resolution_a: float,
                 low_resolution_a: float = 200.0):
        self.box_px = reference.shape[0]
        self.pixel_size_a = float(pixel_size_a)
        self.grid = gridding.reference_grid(reference, PAD)
        fx, fy = centred_frequencies_2d(self.box_px, pixel_size_a)
        fx, fy = np.broadcast_arrays(fx, fy)
        frequency = np.hypot(fx, fy)
        limit = min(1.0 / resolution_a, (self.box_px // 2 - 1) / (self.box_px * pixel_size_a))
        self.mask = (frequency <= limit) & (frequency >= 1.0 / low_resolution_a)
        self.fx, self.fy = fx[self.mask], fy[self.mask]
        self.frequency = frequency[self.mask]
        q = np.arange(self.box_px) - self.box_px // 2
        qx, qy = np.meshgrid(q, q)
        self.k = np.stack([qx[self.mask], qy[self.mask], np.zeros(self.mask.sum())],
                          1).astype(np.float32)
        self.ring = np.rint(frequency[self.mask] * self.box_px * pixel_size_a).astype(int)

    def band(self, spectra: np.ndarray) -> np.ndarray:
        """The band's values of centred spectra (..., B, B) -> (..., n)."""
        return spectra[..., self.mask]

    def slices(self, particle_rotation: np.ndarray, tilt_rotations: np.ndarray) -> np.ndarray:
        """The reference's central slices at the particle's pose in each tilt, (T, n) complex64."""
        matrices = np.asarray(tilt_rotations, float) @ np.asarray(particle_rotation, float)
        return gridding.sample_rotated(self.grid, matrices, self.k, PAD)

    def transfers(self, optics: TiltSeriesOptics, heights_a: np.ndarray,
                  defocus_offset_a: np.ndarray | float = 0.0) -> np.ndarray:
        """h_t on the band for a particle at ``heights_a`` (+ offsets), (T, n) float32."""
        full = tilt_transfers(self.box_px, self.pixel_size_a,
                              optics.ctf_at_heights(np.asarray(heights_a) + defocus_offset_a),
                              optics.exposure_e_a2)
        return full[:, self.mask]

    def noise_weights(self, bands: np.ndarray) -> np.ndarray:
        """1 / σ² per ring from the mean power of many patches' bands (..., T, n) -> (T, n).

        The patches are mostly noise at the frequencies that matter, so their power per ring
        and tilt is the noise power (an overestimate at low frequency, which only flattens the
        weighting there)."""
        power = np.abs(bands.reshape(-1, *bands.shape[-2:])) ** 2
        mean = power.mean(axis=0)
        rings = self.ring.max() + 1
        weights = np.empty(mean.shape, dtype=np.float32)
        counts = np.bincount(self.ring, minlength=rings)
        for t in range(mean.shape[0]):
            ring_power = np.bincount(self.ring, weights=mean[t], minlength=rings)
            ring_power = ring_power / np.maximum(counts, 1)
            weights[t] = 1.0 / np.maximum(ring_power[self.ring], 1e-30)
        return weights
