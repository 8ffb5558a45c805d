"""Particle images from the tilt series: pseudo-subtomograms and 3D CTF models (RELION 4's idea).

For a particle at ``position_a`` (Å from the tomogram centre), every tilt's projection matrix
gives where it is seen (image Å) and its height along the beam, hence its own defocus
(``defocus at the tilt axis + height``; geometry.particle_in_tilts). A pseudo-subtomogram takes
the tilt's patch around that point, CTF-premultiplies and dose-weights its spectrum with the
tilt's transfer h_t at the particle's defocus, and inserts it as a central slice of a 3D
Fourier box (averaging.insertion), accumulating Σ h_t² and the multiplicity. A plain
subtomogram cut from a tomogram gets the same treatment for its 3D CTF model: the slices of
h_t alone, averaged where they overlap, as weighted back-projection averages the tilts.

Tilt images enter in contrast units (counts / mean - 1, so dense objects are dark as the CTF
model expects); binning crops the patch spectrum to the output box (no aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms.averaging.insertion import insert_slices, to_rfft_data
from tomoweave.algorithms.fourier import centred_grid_from_rfft, tilt_transfers
from tomoweave.geometry.projection import particle_in_tilts


@dataclass
class TiltSeriesOptics:
    """What the transfer of each tilt needs: per-tilt CTF at the tilt axis and exposure.

    Arrays have one value per tilt, in the order of the projection matrices.
    """

    defocus_u_a: np.ndarray
    defocus_v_a: np.ndarray
    astigmatism_angle_deg: np.ndarray
    exposure_e_a2: np.ndarray | None  # at the middle of each tilt's exposure; None: no damping
    voltage_kv: float = 300.0
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.07
    phase_shift_deg: np.ndarray | None = None

    def ctf_at_heights(self, height_a: np.ndarray, phase_flipped: bool = False) -> dict:
        """The per-tilt ``ctf`` dict of fourier.tilt_transfers for a point at these heights."""
        ctf = {"defocus_u_a": np.asarray(self.defocus_u_a) + height_a,
               "defocus_v_a": np.asarray(self.defocus_v_a) + height_a,
               "astigmatism_angle_deg": np.asarray(self.astigmatism_angle_deg),
               "voltage_kv": self.voltage_kv,
               "spherical_aberration_mm": self.spherical_aberration_mm,
               "amplitude_contrast": self.amplitude_contrast, "phase_flipped": phase_flipped}
        if self.phase_shift_deg is not None:
            ctf["phase_shift_deg"] = np.asarray(self.phase_shift_deg)
        return ctf


def ctf_model_3d(matrices: np.ndarray, optics: TiltSeriesOptics, position_a: np.ndarray,
                 box_px: int, pixel_size_a: float, *, ctf_on: bool = True,
                 phase_flipped: bool = False, exposure_power: float = 1.0) -> np.ndarray:
    """Signed 3D CTF model C of a subtomogram cut from a back-projected tomogram.

    C(k) = Σ_t w_t(k) h_t(k) / max(Σ_t w_t(k), 1): the transfer of each tilt at the particle's
    own defocus on its central slice, averaged where slices overlap (as WBP averages the
    tilts) and fading where they do not cover a voxel; zero in the missing wedge. Centred full
    grid (zero frequency at index box // 2), float32, box³.

    Parameters
    ----------
    matrices : (T, 4, 4) projection matrices of the tilts that made the tomogram.
    optics : per-tilt CTF and exposure (defocus at the tilt axis).
    position_a : (3,) particle position, Å from the tomogram centre.
    box_px, pixel_size_a : the subtomogram grid.
    ctf_on : False models the missing wedge and exposure only (CTF unknown).
    phase_flipped : the tomogram was phase-flipped (e.g. 3D CTF correction): h_t = -|CTF_t|.
    exposure_power : 1 for tilts as recorded, 2 for dose-filtered tilts.
    """
    _, heights_a, rotations = particle_in_tilts(matrices, position_a)
    transfers = _transfers(optics, heights_a, box_px, pixel_size_a, ctf_on, phase_flipped,
                           exposure_power)
    data, _, multiplicity = insert_slices(None, transfers, rotations)
    return (data.real / np.maximum(multiplicity, 1.0)).astype(np.float32)


def _transfers(optics, heights_a, box_px, pixel_size_a, ctf_on, phase_flipped, power):
    transfers = tilt_transfers(box_px, pixel_size_a, optics.ctf_at_heights(heights_a,
                                                                           phase_flipped),
                               optics.exposure_e_a2, exposure_power=power)
    if not ctf_on:
        transfers = np.abs(tilt_transfers(box_px, pixel_size_a, {
            "defocus_u_a": np.zeros(len(heights_a)), "amplitude_contrast": 1.0,
            "voltage_kv": optics.voltage_kv}, optics.exposure_e_a2, exposure_power=power))
    return transfers


@dataclass
class PseudoSubtomogram:
    """One particle's premultiplied spectrum and its weights (rfftn layout, see ParticleImages)."""

    data_ft: np.ndarray  # complex64 (B, B, B//2+1)
    weight: np.ndarray  # float32 (B, B, B//2+1), Σ h²
    multiplicity: np.ndarray  # float32 (B, B, B//2+1)
    pixel_size_a: float

    def real_space(self) -> np.ndarray:
        box = self.data_ft.shape[0]
        return scipy.fft.irfftn(self.data_ft, (box,) * 3, workers=-1).astype(np.float32)

    def centred_weight(self) -> np.ndarray:
        return centred_grid_from_rfft(self.weight, self.data_ft.shape[0])

    def centred_multiplicity(self) -> np.ndarray:
        return centred_grid_from_rfft(self.multiplicity, self.data_ft.shape[0])


def pseudo_subtomogram(images: np.ndarray, matrices: np.ndarray, optics: TiltSeriesOptics,
                       image_pixel_size_a: float, position_a: np.ndarray, box_px: int, *,
                       binning: float = 1.0, offsets_a: np.ndarray | None = None,
                       defocus_offset_a: float = 0.0) -> PseudoSubtomogram:
    """Pseudo-subtomogram of one particle from its tilt series.

    Parameters
    ----------
    images : (T, ny, nx) float32
        The tilt images in contrast units (counts / mean - 1), in the order of ``matrices``
        (a memory map works: only the patches are read).
    matrices : (T, 4, 4)
        Projection matrices (tomogram Å -> image Å) of those tilts.
    optics : TiltSeriesOptics
        Per-tilt CTF at the tilt axis and exposure.
    image_pixel_size_a : float
        Pixel size of the tilt images, Å.
    position_a : (3,)
        The particle, Å from the tomogram centre.
    box_px : int
        Output box (even), at ``image_pixel_size_a × binning`` Å/px.
    binning : float ≥ 1
        Patches are cut at ``round(box_px × binning)`` px (even) and their spectra cropped.
    offsets_a : (T, 2), optional
        Extra displacement (x, y) of the particle in each image beyond the projection, Å: a
        field deformation or the particle's own motion (tilt_refinement).
    defocus_offset_a : float
        The particle's defocus beyond its height (tilt_refinement's per-particle offset), Å.
    """
    if binning < 1:
        raise ValueError(f"binning {binning}: expected ≥ 1")
    source_px = source_box_px(box_px, binning)
    pixel_out_a = image_pixel_size_a * source_px / box_px
    image_a, heights_a, rotations = particle_in_tilts(matrices, position_a)
    if offsets_a is not None:
        image_a = image_a + np.asarray(offsets_a, dtype=float).reshape(-1, 2)
    heights_a = heights_a + float(defocus_offset_a)
    n_tilts, ny, nx = images.shape
    centres_px = image_a / image_pixel_size_a + np.array([nx // 2, ny // 2])
    slices = np.empty((n_tilts, box_px, box_px), dtype=np.complex64)
    for t in range(n_tilts):
        slices[t] = patch_spectrum(images[t], centres_px[t], source_px, box_px)
    transfers = tilt_transfers(box_px, pixel_out_a, optics.ctf_at_heights(heights_a),
                               optics.exposure_e_a2)
    data, weight, multiplicity = insert_slices(slices, transfers, rotations)
    half = box_px // 2 + 1
    return PseudoSubtomogram(
        to_rfft_data(data),
        np.ascontiguousarray(np.fft.ifftshift(weight)[:, :, :half]),
        np.ascontiguousarray(np.fft.ifftshift(multiplicity)[:, :, :half]), pixel_out_a)


def source_box_px(box_px: int, binning: float) -> int:
    """Patch size (even) cut from the tilt images for a box of ``box_px`` at ``binning``: the
    output pixel is the tilt pixel × source / box (≈ binning)."""
    source_px = int(round(box_px * binning))
    return source_px + source_px % 2


def patch_spectrum(image: np.ndarray, centre_xy_px: np.ndarray, source_px: int,
                   box_px: int) -> np.ndarray:
    """Centred 2D spectrum (box_px², zero frequency at box_px // 2) of the patch of ``image``
    around the fractional pixel ``centre_xy_px``, whose origin is that point exactly.

    The patch is cut at ``source_px`` around the nearest pixel (outside the image: zero, the
    mean of contrast), moved by the sub-pixel remainder with a phase ramp, and cropped in
    Fourier space to ``box_px`` (values scaled by (box/source)² so real-space contrast keeps
    its units).
    """
    ny, nx = image.shape
    base = np.rint(centre_xy_px).astype(int)
    remainder = np.asarray(centre_xy_px, dtype=float) - base
    low = base - source_px // 2
    patch = np.zeros((source_px, source_px), dtype=np.float32)
    x0, x1 = max(0, low[0]), min(nx, low[0] + source_px)
    y0, y1 = max(0, low[1]), min(ny, low[1] + source_px)
    if x1 > x0 and y1 > y0:
        patch[y0 - low[1]:y1 - low[1], x0 - low[0]:x1 - low[0]] = image[y0:y1, x0:x1]
    spectrum = scipy.fft.fftshift(scipy.fft.fft2(scipy.fft.ifftshift(patch), workers=-1))
    start = source_px // 2 - box_px // 2
    cropped = spectrum[start:start + box_px, start:start + box_px]
    q = np.arange(box_px) - box_px // 2
    ramp = np.exp(2j * np.pi * (q[None, :] * remainder[0] + q[:, None] * remainder[1])
                  / source_px)
    return (cropped * ramp * (box_px / source_px) ** 2).astype(np.complex64)
