"""Template-matching picking from start to end: template preparation, search, peaks, refinement.

Glue over :mod:`tomoweave.algorithms.template_matching` so that a protocol (or a test) runs the
whole sequence with one call and the same choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from tomoweave.algorithms import template_matching as tm

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
    volume = tm.rescale_volume(np.asarray(template, dtype=np.float32), template_pixel_a,
                               pixel_size_a)
    box = max(8, 2 * int(np.ceil(0.6 * diameter_a / pixel_size_a)))
    volume = tm.crop_or_pad(volume, box)
    if contrast == "dark" and ctf is None:
        volume = -volume
    weight = tm.template_weight(box, pixel_size_a, tilt_range_deg, lowpass_a, ctf)
    mask = tm.spherical_mask(box, 0.5 * diameter_a / pixel_size_a, soft_px=2.0)
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
    rotations = tm.angular_sampling(angular_step_deg, symmetry)

    def tomogram_filter(shape: tuple[int, ...]) -> np.ndarray:
        return tm.lowpass_filter(shape, pixel_size_a, lowpass_a)

    result = tm.match_template(tomogram, template, rotations,
                               tomogram_filter if lowpass_a else None, progress=progress)
    radius_px = 0.5 * diameter_a / pixel_size_a
    exclusion_px = (exclusion_radius_a or 0.5 * diameter_a) / pixel_size_a
    border_px = int(round(radius_px))
    messages = [f"searched {len(rotations)} orientations ({angular_step_deg:g}° step, "
                f"symmetry {symmetry}) over {tomogram.size} voxels"]
    filtered = _filtered(tomogram, pixel_size_a, lowpass_a)
    if mask_gold:
        gold = tm.high_contrast_mask(filtered, 100.0 / pixel_size_a, radius_px)
        if gold.any():
            result.scores[gold] = -1.0
            messages.append(f"masked {gold.mean():.1%} of the volume around high-contrast "
                            "blobs (gold)")
    if threshold is None:
        threshold = tm.auto_threshold(result.scores, threshold_method, border_px=border_px,
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
    weight = tm.lowpass_filter(data.shape, pixel_size_a, lowpass_a)
    return scipy.fft.irfftn(scipy.fft.rfftn(data, workers=-1) * weight, s=data.shape,
                            workers=-1).astype(np.float32)
