"""Comparing two volumes of the same object made by different programs: band-limited correlation,
the shift between them and whether one is a mirror or flipped copy of the other.

Used to check that another program (RELION, IMOD, ...) reconstructs what tomoweave exported into
the same tomogram or average. Volumes are [z, y, x] on the same voxel grid, centre N // 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms.fourier import lowpass_filter
from tomoweave.algorithms.windows import parabolic_offset

# Axis flips of an [z, y, x] array: single ones are mirrors, pairs are 180° rotations.
FLIPS = {"x": (2,), "y": (1,), "z": (0,), "xy": (1, 2), "xz": (0, 2), "yz": (0, 1),
         "xyz": (0, 1, 2)}


@dataclass(frozen=True)
class VolumeAgreement:
    """How well ``volume`` matches ``reference`` (see ``compare_volumes``)."""

    correlation: float  # Pearson, band-limited, as the volumes lie
    peak_correlation: float  # at the best shift
    shift_voxels_xyz: tuple[float, float, float]  # move ``volume`` by this to match best
    flip_correlations: dict[str, float]  # best over shifts, ``volume`` flipped (FLIPS)

    @property
    def flipped(self) -> bool:
        """A flipped copy of ``volume`` matches better than ``volume`` itself."""
        return max(self.flip_correlations.values()) > self.peak_correlation


def band_limit(volume: np.ndarray, fraction_of_nyquist: float) -> np.ndarray:
    """``volume`` minus its mean, low-passed (raised cosine) at this fraction of Nyquist."""
    if not 0 < fraction_of_nyquist <= 1:
        raise ValueError(f"fraction_of_nyquist {fraction_of_nyquist}: expected 0 < f <= 1")
    volume = np.asarray(volume, dtype=np.float32)
    spectrum = scipy.fft.rfftn(volume - volume.mean(), workers=-1)
    spectrum *= lowpass_filter(volume.shape, 1.0, 2.0 / fraction_of_nyquist)
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)


def compare_volumes(reference: np.ndarray, volume: np.ndarray, *,
                    fraction_of_nyquist: float = 0.45,
                    mask: np.ndarray | None = None) -> VolumeAgreement:
    """Correlation of two volumes band-limited to ``fraction_of_nyquist``, the shift (voxels,
    sub-voxel by a parabola through the cross-correlation peak) that aligns ``volume`` to
    ``reference``, and the best correlations of ``volume``'s flipped copies.

    Parameters
    ----------
    reference, volume : ndarray, shape (Z, Y, X)
        The same grid; values in any unit (correlation ignores scale and offset).
    fraction_of_nyquist : float
        Low-pass edge, as a fraction of the Nyquist frequency of the voxel grid.
    mask : ndarray of shape (Z, Y, X), optional
        Weights applied to both band-limited volumes (e.g. a soft sphere).
    """
    if reference.shape != volume.shape:
        raise ValueError(f"volumes differ in shape: {reference.shape} vs {volume.shape}")
    weight = np.ones(reference.shape, np.float32) if mask is None else mask.astype(np.float32)
    a = band_limit(reference, fraction_of_nyquist) * weight
    b = band_limit(volume, fraction_of_nyquist) * weight
    correlation = _pearson(a, b)
    peak, shift = _best_shift(a, b)
    flips = {name: _best_shift(a, np.flip(b, axes).copy())[0] for name, axes in FLIPS.items()}
    return VolumeAgreement(correlation=correlation, peak_correlation=peak,
                           shift_voxels_xyz=tuple(float(s) for s in shift[::-1]),
                           flip_correlations=flips)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(np.dot(a, b) / max(np.sqrt(np.dot(a, a) * np.dot(b, b)), 1e-30))


def _best_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """Peak of the normalised circular cross-correlation and its (z, y, x) shift of ``b``."""
    a = a - a.mean()
    b = b - b.mean()
    norm = max(float(np.sqrt(np.sum(a * a, dtype=np.float64) * np.sum(b * b, dtype=np.float64))),
               1e-30)
    cc = scipy.fft.irfftn(scipy.fft.rfftn(a, workers=-1) * np.conj(scipy.fft.rfftn(b, workers=-1)),
                          s=a.shape, workers=-1) / norm
    peak = np.unravel_index(int(np.argmax(cc)), cc.shape)
    shift = []
    for axis, (index, size) in enumerate(zip(peak, cc.shape, strict=True)):
        around = [list(peak) for _ in range(3)]
        for k, step in enumerate((-1, 0, 1)):
            around[k][axis] = (index + step) % size
        left, centre, right = (float(cc[tuple(p)]) for p in around)
        signed = index if index <= size // 2 else index - size
        shift.append(signed + parabolic_offset(left, centre, right))
    return float(cc[peak]), np.array(shift)


def mirror_volume(volume: np.ndarray, axis: str = "z") -> np.ndarray:
    """The mirror image of a volume through the plane ``axis`` = its centre index N // 2 (the
    other hand of the same object, centre kept)."""
    index = {"x": 2, "y": 1, "z": 0}[axis]
    size = volume.shape[index]
    order = (2 * (size // 2) - np.arange(size)) % size
    return np.take(volume, order, axis=index)


def remove_radial_average(volume: np.ndarray) -> np.ndarray:
    """``volume`` minus its average over spheres about the centre (N // 2, 1-voxel shells): the
    non-spherical part, which tells an object from a blob and its hand from the mirror."""
    grid = np.indices(volume.shape) - (np.array(volume.shape) // 2)[:, None, None, None]
    shell = np.rint(np.sqrt((grid.astype(np.float64) ** 2).sum(axis=0))).astype(int)
    sums = np.bincount(shell.ravel(), weights=volume.ravel().astype(np.float64))
    counts = np.maximum(np.bincount(shell.ravel()), 1)
    return (volume - (sums / counts)[shell]).astype(np.float32)
