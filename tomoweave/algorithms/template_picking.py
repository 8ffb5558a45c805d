"""Template-matching picking from start to end: template preparation, search, peaks, refinement.

Glue over :mod:`tomoweave.algorithms.template_matching` so that a protocol (or a test) runs the
whole sequence with one call and the same choices, plus what decides which peaks are particles:
the automatic score threshold and the masking of gold beads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.special import erfcinv

from tomoweave.algorithms import fourier, volumes
from tomoweave.algorithms import template_matching as tm
from tomoweave.geometry import sampling

MAX_RESCALE_FACTOR = 8.0  # beyond this a template is most likely the wrong file or pixel size


def rescale_factor_checked(template_pixel_a: float, tomogram_pixel_a: float) -> float:
    """template / tomogram pixel-size ratio, or ValueError when it is absurd."""
    factor = template_pixel_a / tomogram_pixel_a
    if not 1 / MAX_RESCALE_FACTOR <= factor <= MAX_RESCALE_FACTOR:
        raise ValueError(
            f"template pixel size {template_pixel_a:g} Å vs tomogram {tomogram_pixel_a:g} Å: "
            f"rescaling by {factor:.3g} is outside 1/{MAX_RESCALE_FACTOR:g} … "
            f"{MAX_RESCALE_FACTOR:g}; check the template's pixel size")
    return factor


def prepare_search_template(template: np.ndarray, template_pixel_a: float, pixel_size_a: float,
                            diameter_a: float, contrast: str = "dark",
                            tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0),
                            lowpass_a: float | None = None,
                            ctf: dict | None = None) -> tm.PreparedTemplate:
    """Rescale, crop, mask and weight a template for a tomogram of ``pixel_size_a``.

    ``contrast``: how particles look in the tomogram ("dark" for unstained cryo-ET). With a CTF
    the (signed) CTF already turns the positive density dark, so no further sign flip is made.
    """
    rescale_factor_checked(template_pixel_a, pixel_size_a)
    volume = volumes.rescale_volume(np.asarray(template, dtype=np.float32), template_pixel_a,
                               pixel_size_a)
    box = max(8, 2 * int(np.ceil(0.6 * diameter_a / pixel_size_a)))
    volume = volumes.crop_or_pad(volume, box)
    if contrast == "dark" and ctf is None:
        volume = -volume
    weight = fourier.wedge_ctf_weight(box, pixel_size_a, tilt_range_deg, lowpass_a, ctf)
    mask = volumes.spherical_mask(box, 0.5 * diameter_a / pixel_size_a, soft_px=2.0)
    return tm.PreparedTemplate(volume, mask, weight)


@dataclass
class PickResult:
    """Picked peaks: voxel positions (x, y, z), rotations, scores, and how they were chosen."""

    positions_xyz_px: np.ndarray
    rotations: np.ndarray
    scores: np.ndarray
    threshold: float
    score_map: np.ndarray
    n_rotations: int
    messages: list[str] = field(default_factory=list)


def pick_with_template(tomogram: np.ndarray, pixel_size_a: float, template: tm.PreparedTemplate,
                       angular_step_deg: float, diameter_a: float, symmetry: str = "C1",
                       max_particles: int = 1000, threshold: float | None = None,
                       threshold_method: str = "auto", lowpass_a: float | None = None,
                       mask_gold: bool = True, refine: bool = True,
                       exclusion_radius_a: float | None = None,
                       progress: Callable[[int, int], None] | None = None) -> PickResult:
    """Search all orientations, mask gold, choose the threshold, extract and refine peaks.

    Peaks closer than ``exclusion_radius_a`` (default: the particle radius) to a better one are
    dropped; peaks within a particle radius of the volume's faces are ignored.
    """
    rotations = sampling.angular_sampling(angular_step_deg, symmetry)

    def tomogram_filter(shape: tuple[int, ...]) -> np.ndarray:
        return fourier.lowpass_filter(shape, pixel_size_a, lowpass_a)

    result = tm.match_template(tomogram, template, rotations,
                               tomogram_filter if lowpass_a else None, progress=progress)
    radius_px = 0.5 * diameter_a / pixel_size_a
    exclusion_px = (exclusion_radius_a or 0.5 * diameter_a) / pixel_size_a
    border_px = int(round(radius_px))
    messages = [f"searched {len(rotations)} orientations ({angular_step_deg:g}° step, "
                f"symmetry {symmetry}) over {tomogram.size} voxels"]
    filtered = _filtered(tomogram, pixel_size_a, lowpass_a)
    if mask_gold:
        gold = high_contrast_mask(filtered, 100.0 / pixel_size_a, radius_px)
        if gold.any():
            result.scores[gold] = -1.0
            messages.append(f"masked {gold.mean():.1%} of the volume around high-contrast "
                            "blobs (gold)")
    if threshold is None:
        threshold = auto_threshold(result.scores, threshold_method, border_px=border_px,
                                      radius_px=exclusion_px)
        messages.append(f"score threshold {threshold:.4f} ({threshold_method}, from the score "
                        "statistics)")
    peaks_zyx, values = tm.find_peaks(result.scores, exclusion_px, threshold,
                                      max_particles, border_px)
    chosen = result.rotations[result.rotation_index[tuple(peaks_zyx.T)]] if len(peaks_zyx) \
        else np.zeros((0, 3, 3))
    if refine and len(peaks_zyx):
        refined = [tm.refine_orientation(tm.subvolume_at(filtered, p, template.box), template, r,
                                         angular_step_deg)[0]
                   for p, r in zip(peaks_zyx, chosen, strict=True)]
        chosen = np.asarray(refined)
    messages.append(f"{len(peaks_zyx)} particles above {threshold:.4f}")
    positions_zyx = np.array([subvoxel_peak(result.scores, p) for p in peaks_zyx])
    return PickResult(positions_zyx[:, ::-1] if len(peaks_zyx) else np.zeros((0, 3)),
                      np.asarray(chosen).reshape(-1, 3, 3), values, float(threshold),
                      result.scores, len(rotations), messages)


def subvoxel_peak(scores: np.ndarray, peak_zyx: np.ndarray) -> np.ndarray:
    """Peak position refined per axis by the parabola through the peak and its neighbours."""
    position = np.asarray(peak_zyx, dtype=float).copy()
    for axis in range(3):
        index = np.asarray(peak_zyx, dtype=int).copy()
        if not 0 < index[axis] < scores.shape[axis] - 1:
            continue
        centre = scores[tuple(index)]
        index[axis] -= 1
        low = scores[tuple(index)]
        index[axis] += 2
        high = scores[tuple(index)]
        curvature = low - 2 * centre + high
        if curvature < 0:
            position[axis] += float(np.clip(0.5 * (low - high) / curvature, -0.5, 0.5))
    return position


def _filtered(volume: np.ndarray, pixel_size_a: float, lowpass_a: float | None) -> np.ndarray:
    data = np.asarray(volume, dtype=np.float32)
    if not lowpass_a:
        return data
    weight = fourier.lowpass_filter(data.shape, pixel_size_a, lowpass_a)
    return scipy.fft.irfftn(scipy.fft.rfftn(data, workers=-1) * weight, s=data.shape,
                            workers=-1).astype(np.float32)


# ----------------------------------------------------------------------------- thresholds
def auto_threshold(scores: np.ndarray, method: str = "auto", n_false: float = 1.0,
                   k_sigma: float = 5.0, border_px: int = 0, radius_px: float = 3.0) -> float:
    """Score threshold from the statistics of the score map.

    ``extreme``: the noise part of the map is taken as Gaussian with the robust (median/MAD)
    mean and spread; the threshold is the level that about ``n_false`` of its voxels exceed
    (the Gaussian tail over the number of voxels, an extreme-value estimate as in pytom-match-pick).
    ``sigma``: robust mean + ``k_sigma`` × robust std. ``otsu``: Otsu's split of the local maxima.
    ``auto``: the ``extreme`` level as a floor, raised to the gap between two clearly separate
    groups of peaks above it (other particles that resemble the template score above noise but
    below the true particles; the split is kept only when the gap exceeds twice the spread of
    the lower group).
    """
    inner = _without_border(scores, border_px)
    values = inner[np.isfinite(inner)].ravel()
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median)))
    if method == "sigma":
        return median + k_sigma * sigma
    floor = median + float(erfcinv(2.0 * n_false / values.size) * np.sqrt(2.0)) * sigma
    if method == "extreme":
        return floor
    if method == "otsu":
        peaks = inner[(inner >= ndimage.maximum_filter(inner, size=5)) & (inner > median)]
        return _otsu(peaks) if peaks.size > 2 else median + k_sigma * sigma
    if method != "auto":
        raise ValueError(f"threshold method '{method}': expected auto, extreme, sigma or otsu")
    _, peaks = tm.find_peaks(scores, radius_px, floor, 100000, border_px)
    return max(floor, _two_group_split(np.sort(peaks)))


def _two_group_split(values: np.ndarray) -> float:
    """Level between two clearly separated groups of sorted values, or -inf when there are none.

    The split maximises gap / (spread below + spread above); it counts only when each group has
    3 values or more and the gap is at least twice the lower group's spread and at least the
    upper group's.
    """
    if values.size < 4:
        return -np.inf
    best, level = 0.0, -np.inf
    for i in range(3, values.size - 2):  # at least 3 values on each side
        lower, upper = values[:i], values[i:]
        gap = values[i] - values[i - 1]
        spread_low, spread_high = float(lower.std()), float(upper.std())
        if gap < 2.0 * spread_low or gap < spread_high:
            continue
        ratio = gap / (spread_low + spread_high + 1e-12)
        if ratio > best:
            best, level = ratio, float(0.5 * (values[i] + values[i - 1]))
    return level


def _without_border(scores: np.ndarray, border_px: int) -> np.ndarray:
    if border_px <= 0:
        return scores
    b = [min(border_px, (s - 1) // 2) for s in scores.shape]
    return scores[b[0]:scores.shape[0] - b[0], b[1]:scores.shape[1] - b[1],
                  b[2]:scores.shape[2] - b[2]]


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    histogram, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


# ----------------------------------------------------------------------------- gold beads
def high_contrast_mask(volume: np.ndarray, blob_diameter_px: float, dilation_px: float,
                       gap_ratio: float = 1.5, max_blobs: int = 200) -> np.ndarray:
    """Mask of outlier blobs much stronger than everything else (gold beads), dilated.

    Local extrema of ``|volume - median|`` (one per ``blob_diameter_px``) are sorted; when the
    strongest ones are separated from the rest by a jump of at least ``gap_ratio`` (gold is
    several times denser than protein, whatever the noise), the blobs above the jump are
    masked, from half their peak value outwards, and dilated by ``dilation_px``. Without such a
    jump the mask is empty, so a tomogram without gold loses nothing.
    """
    data = np.abs(volume - np.median(volume)).astype(np.float32)
    size = max(3, int(round(blob_diameter_px)) | 1)
    peaks = data[(data >= ndimage.maximum_filter(data, size=size)) & (data > 0)]
    peaks = np.sort(peaks)[::-1][:max_blobs]
    mask = np.zeros(volume.shape, dtype=bool)
    if peaks.size < 3:
        return mask
    ratios = peaks[:-1] / np.maximum(peaks[1:], 1e-12)
    # only jumps among the top blobs count; a gold-free tomogram decays smoothly
    limit = max(1, min(len(ratios), max_blobs // 4))
    jump = int(np.argmax(ratios[:limit]))
    if ratios[jump] < gap_ratio:
        return mask
    weakest_gold = peaks[jump]
    seeds = data >= weakest_gold
    grown = ndimage.binary_propagation(seeds, mask=data >= 0.5 * weakest_gold)
    if dilation_px >= 1:
        radius = int(np.ceil(dilation_px))
        grid = np.indices((2 * radius + 1,) * 3) - radius
        ball = (grid**2).sum(axis=0) <= dilation_px**2
        grown = ndimage.binary_dilation(grown, structure=ball)
    return grown
