"""Agreement of two results of the same data ("compare to trust"): CTF estimates, tilt-series
alignments and maps. Plain arrays in, numbers out; protocols/consensus.py wraps them.

- CTF: per tilt, the defocus difference and the *consensus resolution*: the highest frequency
  up to which the two CTFs stay within a quarter period of each other (|Δχ| ≤ π/2 in every
  direction), the criterion of Xmipp's CTF consensus (Marabini et al. 2015).
- Alignment: per tilt, how far apart the two projection models put the same 3D points in the
  image (px); points fill the tomogram's volume.
- Maps: the FSC between two maps after the best rotation and shift of one onto the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoweave.algorithms.comparison import compare_volumes
from tomoweave.algorithms.ctf_model import ctf_phase
from tomoweave.algorithms.fourier import (
    fourier_shell_correlation,
    resolution_at_threshold,
    shell_frequencies_inv_a,
)
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.geometry.projection import project_points_a
from tomoweave.geometry.sampling import local_sampling

DIRECTIONS = 36  # astigmatism directions sampled over 180°


def ctf_consensus_resolution_a(ctf_a: dict, ctf_b: dict, *, pixel_size_a: float,
                               voltage_kv: float = 300.0, spherical_aberration_mm: float = 2.7,
                               amplitude_contrast: float = 0.07,
                               samples: int = 512) -> float:
    """Resolution (Å) up to which two CTF estimates agree within |Δχ| ≤ π/2 in every direction.

    Parameters
    ----------
    ctf_a, ctf_b : dict
        ``defocus_u_a``, ``defocus_v_a`` (Å, underfocus positive), ``astigmatism_angle_deg``
        and optionally ``phase_shift_deg`` of each estimate.
    pixel_size_a : float
        Pixel size of the images (Å): frequencies up to Nyquist are compared; two CTFs that
        agree up to Nyquist give 2 × pixel.
    voltage_kv, spherical_aberration_mm, amplitude_contrast : microscope values (kV, mm).
    samples : int
        Frequencies sampled from 0 to Nyquist.
    """
    frequencies = np.linspace(0.0, 0.5 / pixel_size_a, samples)
    angles = np.radians(np.arange(DIRECTIONS) * 180.0 / DIRECTIONS)
    fx = frequencies[None, :] * np.cos(angles)[:, None]
    fy = frequencies[None, :] * np.sin(angles)[:, None]
    microscope = {"voltage_kv": voltage_kv, "spherical_aberration_mm": spherical_aberration_mm,
                  "amplitude_contrast": amplitude_contrast}
    phases = [ctf_phase(fx, fy, c["defocus_u_a"], c["defocus_v_a"],
                        c.get("astigmatism_angle_deg", 0.0), phase_shift_deg=c.get(
                            "phase_shift_deg", 0.0), **microscope) for c in (ctf_a, ctf_b)]
    apart = np.any(np.abs(phases[0] - phases[1]) > np.pi / 2, axis=0)
    if not apart.any():
        return 2.0 * pixel_size_a
    first = int(np.argmax(apart))
    return float(1.0 / frequencies[max(first, 1)])


def alignment_discrepancy_px(matrices_a: np.ndarray, matrices_b: np.ndarray,
                             points_a: np.ndarray, pixel_size_a: float) -> np.ndarray:
    """Per tilt: mean and largest distance (px) between the images of the same 3D points
    projected by two alignments.

    Parameters
    ----------
    matrices_a, matrices_b : (T, 4, 4)
        Projection matrices (tomogram Å -> image Å) of the two alignments, tilt by tilt.
    points_a : (N, 3)
        Points in Å from the tomogram centre (see :func:`volume_points_a`).
    pixel_size_a : float
        Pixel size (Å) of the image the distances are counted in.

    Returns
    -------
    (T, 2) array: mean and maximum distance per tilt, px.
    """
    out = np.zeros((len(matrices_a), 2))
    for tilt, (a, b) in enumerate(zip(matrices_a, matrices_b, strict=True)):
        distance = np.linalg.norm(project_points_a(a, points_a) - project_points_a(b, points_a),
                                  axis=1) / pixel_size_a
        out[tilt] = distance.mean(), distance.max()
    return out


def volume_points_a(size_xyz_a: tuple[float, float, float], per_axis: int = 5) -> np.ndarray:
    """A regular grid of ``per_axis``³ points filling a box of these sides (Å), centred."""
    axes = [np.linspace(-0.5 * s, 0.5 * s, per_axis) for s in size_xyz_a]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


@dataclass
class MapComparison:
    """FSC of ``volume`` (aligned) against ``reference``, per shell, and its crossings."""

    frequencies_inv_a: np.ndarray
    fsc: np.ndarray
    resolution_05_a: float
    resolution_0143_a: float
    rotation: np.ndarray  # applied to ``volume`` (active, about the centre)
    shift_voxels_xyz: tuple[float, float, float]  # then this shift
    correlation_before: float
    correlation_after: float
    aligned: np.ndarray


def compare_maps(reference: np.ndarray, volume: np.ndarray, pixel_size_a: float, *,
                 search_range_deg: float = 0.0, search_step_deg: float = 3.0,
                 mask: np.ndarray | None = None) -> MapComparison:
    """Align ``volume`` onto ``reference`` (rotations within ``search_range_deg`` of the
    identity, every ``search_step_deg``; then the best shift), and their FSC.

    Parameters
    ----------
    reference, volume : (B, B, B) float32, same pixel size (Å), centre B // 2.
    pixel_size_a : float
    search_range_deg, search_step_deg : local rotational search (0: shifts only).
    mask : (B, B, B), optional
        Soft mask applied to both maps for the FSC (and the search).
    """
    if reference.shape != volume.shape or len(set(reference.shape)) != 1:
        raise ValueError(f"maps of shapes {reference.shape} and {volume.shape}: expected the "
                         f"same cubic box")
    weight = np.ones(reference.shape, np.float32) if mask is None else mask.astype(np.float32)
    before = compare_volumes(reference, volume, mask=weight).correlation
    rotations = (local_sampling(search_step_deg, search_range_deg) if search_range_deg > 0
                 else np.eye(3)[None])
    best = (-np.inf, np.eye(3), (0.0, 0.0, 0.0))
    for rotation in rotations:
        turned = volume if search_range_deg == 0 else rotate_volume(volume, rotation, order=1)
        agreement = compare_volumes(reference, turned, mask=weight)
        if agreement.peak_correlation > best[0]:
            best = (agreement.peak_correlation, rotation, agreement.shift_voxels_xyz)
    _, rotation, shift_xyz = best
    aligned = rotate_volume(volume, rotation, order=3) if not np.allclose(rotation, np.eye(3)) \
        else volume.astype(np.float32)
    aligned = _shifted(aligned, shift_xyz)
    box = reference.shape[0]
    fsc = fourier_shell_correlation(reference * weight, aligned * weight)
    return MapComparison(
        frequencies_inv_a=shell_frequencies_inv_a(box, pixel_size_a), fsc=fsc,
        resolution_05_a=resolution_at_threshold(fsc, box, pixel_size_a, 0.5),
        resolution_0143_a=resolution_at_threshold(fsc, box, pixel_size_a, 0.143),
        rotation=rotation, shift_voxels_xyz=tuple(float(s) for s in shift_xyz),
        correlation_before=before,
        correlation_after=compare_volumes(reference, aligned, mask=weight).correlation,
        aligned=aligned)


def _shifted(volume: np.ndarray, shift_xyz) -> np.ndarray:
    """``volume`` moved by ``shift_xyz`` voxels (Fourier phase shift, periodic)."""
    import scipy.fft

    shape = volume.shape
    frequencies = [scipy.fft.fftfreq(n) for n in shape[:2]] + [scipy.fft.rfftfreq(shape[2])]
    kz, ky, kx = np.meshgrid(*frequencies, indexing="ij")
    sx, sy, sz = shift_xyz
    phase = np.exp(-2j * np.pi * (kx * sx + ky * sy + kz * sz))
    return scipy.fft.irfftn(scipy.fft.rfftn(volume) * phase, s=shape).astype(np.float32)
