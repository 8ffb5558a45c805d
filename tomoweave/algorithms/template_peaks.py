"""Peaks of a template-matching score map: extraction, sub-voxel position, local refinement.

Positions are voxel indices [z, y, x]; rotations 3×3 active matrices in (x, y, z).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from tomoweave.algorithms.template_matching import PreparedTemplate
from tomoweave.algorithms.windows import parabolic_offset
from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z


def inner_region(shape: tuple[int, ...], border_px: int) -> tuple[slice, ...]:
    """Slices that leave ``border_px`` voxels out at every face (at least one voxel kept)."""
    b = [min(max(0, border_px), (s - 1) // 2) for s in shape]
    return tuple(slice(m, s - m) for m, s in zip(b, shape, strict=True))


def local_maxima(scores: np.ndarray, radius_px: float, threshold: float,
                 border_px: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Voxels that are the largest within a cube of about the radius, above ``threshold``.

    Returns positions [z, y, x] (K, 3) and values (K,), best first.
    """
    size = max(3, 2 * int(radius_px // 2) + 1)
    inner = inner_region(scores.shape, border_px)
    region = scores[inner]
    candidate = (region >= ndimage.maximum_filter(region, size=size, mode="nearest")) & (
        region >= threshold)
    positions = np.argwhere(candidate) + np.array([s.start for s in inner])
    values = region[candidate]
    order = np.argsort(-values, kind="stable")
    return positions[order], values[order].astype(float)


def find_peaks(scores: np.ndarray, radius_px: float, threshold: float, max_count: int,
               border_px: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Greedy peak extraction: best first, nothing within ``radius_px`` of an accepted peak.

    Parameters
    ----------
    scores : array (Z, Y, X)
    radius_px : float
        Exclusion distance between peaks (the particle's size), voxels.
    threshold : float
        Lowest score kept.
    max_count : int
    border_px : int
        Peaks closer than this to a face are ignored.

    Returns
    -------
    positions_zyx : int array (K, 3)
        Voxel indices [z, y, x] of the peaks, best first.
    values : float array (K,)
    """
    positions, values = local_maxima(scores, radius_px, threshold, border_px)
    if not len(positions):
        return positions.astype(int).reshape(0, 3), values
    tree = cKDTree(positions)
    taken = np.zeros(len(positions), dtype=bool)
    accepted: list[int] = []
    for i in range(len(positions)):
        if taken[i]:
            continue
        accepted.append(i)
        if len(accepted) >= max_count:
            break
        taken[tree.query_ball_point(positions[i], radius_px - 1e-9)] = True
    return positions[accepted].astype(int), values[accepted]


def subvoxel_peak(scores: np.ndarray, peak_zyx: np.ndarray) -> np.ndarray:
    """Peak position refined per axis by the parabola through the peak and its neighbours."""
    position = np.asarray(peak_zyx, dtype=float).copy()
    for axis in range(3):
        index = np.asarray(peak_zyx, dtype=int).copy()
        if not 0 < index[axis] < scores.shape[axis] - 1:
            continue
        samples = []
        for delta in (-1, 0, 1):
            index[axis] = int(peak_zyx[axis]) + delta
            samples.append(float(scores[tuple(index)]))
        position[axis] += parabolic_offset(*samples)
    return position


def subvolume_at(volume: np.ndarray, centre_zyx: np.ndarray, box: int) -> np.ndarray:
    """Box of ``box`` voxels centred (index box // 2) on an integer voxel, zero-padded outside."""
    out = np.zeros((box,) * 3, dtype=np.float32)
    source, target = [], []
    for c, size in zip(np.asarray(centre_zyx, dtype=int), volume.shape, strict=True):
        lo = c - box // 2
        s0, s1 = max(0, lo), min(size, lo + box)
        source.append(slice(s0, s1))
        target.append(slice(s0 - lo, s1 - lo))
    out[tuple(target)] = volume[tuple(source)]
    return out


def local_score(subvolume: np.ndarray, template: PreparedTemplate, rotation: np.ndarray) -> float:
    """NCC of the rotated template with a subvolume of the same box, centred."""
    mask, total = template.mask, template.mask_sum
    mean = float((subvolume * mask).sum() / total)
    variance = float((mask * (subvolume - mean) ** 2).sum() / total)
    if variance <= 0:
        return 0.0
    return float((template.rotated(rotation) * subvolume).sum() / (total * np.sqrt(variance)))


def refine_orientation(subvolume: np.ndarray, template: PreparedTemplate, rotation: np.ndarray,
                       step_deg: float, levels: int = 3) -> tuple[np.ndarray, float]:
    """Hill-climb the orientation on finer grids (step/2, step/4, …) at one position.

    Each level tries small rotations about the particle's x, y and z axes (both signs) and
    moves while the NCC improves (at most twice per level).
    """
    best_rotation = np.asarray(rotation, dtype=float)
    best_score = local_score(subvolume, template, best_rotation)
    for level in range(1, levels + 1):
        angle = step_deg / 2**level
        steps = [f(s * angle) for f in (rotation_x, rotation_y, rotation_z) for s in (-1, 1)]
        for _ in range(2):
            trials = [best_rotation @ small for small in steps]
            trial_scores = [local_score(subvolume, template, r) for r in trials]
            k = int(np.argmax(trial_scores))
            if trial_scores[k] <= best_score:
                break
            best_rotation, best_score = trials[k], trial_scores[k]
    return best_rotation, best_score
