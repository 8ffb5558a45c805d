"""Gold-standard FSC of two half maps: unmasked, masked, and mask-corrected (Chen et al. 2013).

A soft mask raises the FSC by removing solvent noise, and its edge adds correlation of its
own. Phase-randomising both half maps beyond the resolution where their unmasked FSC falls
below 0.8 and masking them again measures that added correlation; the corrected curve
(FSC_t − FSC_n) / (1 − FSC_n) is the one whose 0.143 crossing is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoweave.algorithms import fourier
from tomoweave.algorithms.volumes import soft_mask_from_map, spherical_mask

RANDOMISE_BELOW_FSC = 0.8  # RELION postprocess's choice


@dataclass
class GoldStandardFsc:
    """FSC curves per shell (0 … box // 2) and the resolution at the threshold."""

    frequencies_inv_a: np.ndarray
    unmasked: np.ndarray
    masked: np.ndarray | None
    randomised: np.ndarray | None
    corrected: np.ndarray
    randomised_from_shell: int | None
    resolution_a: float
    threshold: float

    def curve_records(self) -> list[dict]:
        """One dict per shell: frequency, resolution_a and each curve (JSON-ready)."""
        rows = []
        for shell, frequency in enumerate(self.frequencies_inv_a):
            row = {"shell": shell, "frequency_inv_a": float(frequency),
                   "resolution_a": float(1.0 / frequency) if frequency > 0 else None,
                   "fsc": float(self.corrected[shell]),
                   "fsc_unmasked": float(self.unmasked[shell])}
            if self.masked is not None:
                row["fsc_masked"] = float(self.masked[shell])
                row["fsc_phase_randomised"] = float(self.randomised[shell])
            rows.append(row)
        return rows


def gold_standard_fsc(half1: np.ndarray, half2: np.ndarray, pixel_size_a: float,
                      mask: np.ndarray | None = None, *, threshold: float = 0.143,
                      seed: int = 0) -> GoldStandardFsc:
    """FSC of two independent half maps, mask-corrected by phase randomisation when masked.

    Parameters
    ----------
    half1, half2 : (B, B, B) float32
    pixel_size_a : float
    mask : (B, B, B) float, optional
        Soft solvent mask (0 … 1). Without one the unmasked FSC is the result.
    threshold : float
        FSC value that defines the resolution (0.143 for half maps).
    seed : int
        Seed of the random phases.
    """
    box = half1.shape[0]
    frequencies = fourier.shell_frequencies_inv_a(box, pixel_size_a)
    unmasked = fourier.fourier_shell_correlation(half1, half2)
    if mask is None:
        resolution = fourier.resolution_at_threshold(unmasked, box, pixel_size_a, threshold)
        return GoldStandardFsc(frequencies, unmasked, None, None, unmasked, None, resolution,
                               threshold)
    masked = fourier.fourier_shell_correlation(half1, half2, mask)
    below = np.flatnonzero(unmasked[1:] < RANDOMISE_BELOW_FSC)
    shell = int(below[0]) + 1 if len(below) else box // 2
    shell = max(2, shell)
    randomise_at_a = box * pixel_size_a / shell
    rng = np.random.default_rng(seed)
    random1 = fourier.phase_randomise(half1, pixel_size_a, randomise_at_a, rng)
    random2 = fourier.phase_randomise(half2, pixel_size_a, randomise_at_a, rng)
    randomised = fourier.fourier_shell_correlation(random1, random2, mask)
    # phase_randomise changes frequencies beyond shell / box: shell ``shell`` itself is only
    # half randomised (its inner half keeps its phases), so its FSC_n is high and correcting it
    # makes a dip; the correction starts at the first fully randomised shell (RELION 3.1 waits
    # two shells for the same reason)
    corrected = fourier.mask_corrected_fsc(masked, randomised, shell + 1)
    resolution = fourier.resolution_at_threshold(corrected, box, pixel_size_a, threshold)
    return GoldStandardFsc(frequencies, unmasked, masked, randomised, corrected, shell,
                           resolution, threshold)


def automatic_mask(average: np.ndarray, pixel_size_a: float, diameter_a: float, *,
                   resolution_a: float | None = None, dilation_px: float = 3.0,
                   soft_px: float = 4.0) -> np.ndarray:
    """A soft solvent mask from an average: low-passed, thresholded above the background.

    The map is low-passed to twice its resolution (at least 15 Å), the background (outside a
    sphere of ``diameter_a``) gives the noise level, and the threshold is the background mean
    plus the larger of 3 noise standard deviations and 5 % of the peak height; regions above it
    (but specks under a tenth of the largest) are grown by ``dilation_px`` with a ``soft_px``
    cosine edge, and kept inside the particle's sphere.
    """
    box = average.shape[0]
    cutoff_a = max(15.0, 2.0 * (resolution_a or 0.0), 2.5 * pixel_size_a)
    smooth = _lowpassed(average, pixel_size_a, cutoff_a)
    radius_px = 0.5 * diameter_a / pixel_size_a
    sphere = spherical_mask(box, min(radius_px, box / 2 - soft_px - 1), soft_px)
    outside = sphere < 1e-3
    background = smooth[outside] if outside.sum() > 50 else smooth[sphere < 0.5]
    level = float(np.mean(background)) if background.size else 0.0
    noise = float(np.std(background)) if background.size else 0.0
    peak = float(np.max(smooth * (sphere > 0.5)))
    threshold = level + max(3.0 * noise, 0.05 * (peak - level))
    mask = soft_mask_from_map(smooth * (sphere > 0.5), threshold, dilation_px=dilation_px,
                              soft_px=soft_px, min_region_fraction=0.1)
    return (mask * sphere).astype(np.float32)


def _lowpassed(volume: np.ndarray, pixel_size_a: float, resolution_a: float) -> np.ndarray:
    import scipy.fft

    spectrum = scipy.fft.rfftn(volume, workers=-1)
    spectrum *= fourier.lowpass_filter(volume.shape, pixel_size_a, resolution_a)
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)
