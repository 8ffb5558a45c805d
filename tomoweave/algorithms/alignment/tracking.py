"""Tracking gold beads through a tilt series.

Tracks start from the beads found in the tilt nearest 0° and grow outwards, one tilt at a time,
alternately to the positive and negative side. Before each new tilt, the 3D position of every
track and the shift of every tilt so far are fitted (linear least squares with the nominal
geometry); the fit predicts where each bead must appear in the new tilt. The predictions are first
moved together by the median offset to their nearest detections (absorbing the unknown shift of
the new tilt), then matched one-to-one to detections within a search radius, closest pairs first.
After a full model is solved, :func:`fill_gaps` looks again for beads missed on the first pass.
"""

from __future__ import annotations

import numpy as np

from tomoweave.algorithms.alignment.solver import (
    AlignmentSolution,
    linear_points_and_shifts,
    nominal_matrices,
)
from tomoweave.algorithms.alignment.xcorr import tilt_order


def match_points(
    predicted_px: np.ndarray, candidates_px: np.ndarray, radius_px: float
) -> np.ndarray:
    """One-to-one matching, closest pairs first.

    Returns an int array (len(predicted),) with the index of the matched candidate or -1.
    """
    matches = np.full(len(predicted_px), -1)
    if len(predicted_px) == 0 or len(candidates_px) == 0:
        return matches
    distance = np.linalg.norm(predicted_px[:, None, :] - candidates_px[None, :, :], axis=2)
    distance = np.where(np.isfinite(distance), distance, np.inf)
    rows, cols = np.nonzero(distance <= radius_px)
    order = np.argsort(distance[rows, cols])
    used_rows, used_cols = set(), set()
    for r, c in zip(rows[order], cols[order], strict=True):
        if r in used_rows or c in used_cols:
            continue
        matches[r] = c
        used_rows.add(r)
        used_cols.add(c)
    return matches


def common_offset(predicted_px: np.ndarray, candidates_px: np.ndarray, radius_px: float):
    """Median displacement from predictions to their nearest candidates within ``radius_px``."""
    finite = np.isfinite(predicted_px).all(axis=1)
    if finite.sum() == 0 or len(candidates_px) == 0:
        return np.zeros(2)
    pred = predicted_px[finite]
    distance = np.linalg.norm(pred[:, None, :] - candidates_px[None, :, :], axis=2)
    nearest = np.argmin(distance, axis=1)
    close = distance[np.arange(len(pred)), nearest] <= radius_px
    if close.sum() < 2:
        return np.zeros(2)
    return np.median(candidates_px[nearest[close]] - pred[close], axis=0)


def track_beads(
    detections_px: list[np.ndarray],
    tilts_deg: np.ndarray,
    z_rot_deg: float,
    search_radius_px: float,
    initial_shifts_px: np.ndarray | None = None,
) -> np.ndarray:
    """Track beads from the tilt nearest 0° outwards.

    Parameters
    ----------
    detections_px : list of T arrays (N_i, 2)
        Bead centres (x, y) in each tilt, px from the image centre.
    tilts_deg : array (T,)
        Nominal tilt angles, in stack order.
    z_rot_deg : float
        Nominal in-plane rotation (tilt-axis angle), degrees.
    search_radius_px : float
        Largest distance between a prediction and the detection it is matched with.
    initial_shifts_px : array (T, 2), optional
        Coarse shifts (e.g. from cross-correlation); they predict each new tilt's shift.

    Returns
    -------
    observations_px : array (B, T, 2), NaN where a bead was not found; B = beads at the start.
    """
    tilts = np.asarray(tilts_deg, dtype=float)
    n_tilts = len(tilts)
    if len(detections_px) != n_tilts:
        raise ValueError(f"need one detection array per tilt ({n_tilts}), got {len(detections_px)}")
    coarse = np.zeros((n_tilts, 2)) if initial_shifts_px is None else np.asarray(initial_shifts_px)
    ref, chains = tilt_order(tilts)
    seeds = np.asarray(detections_px[ref], dtype=float).reshape(-1, 2)
    observations = np.full((len(seeds), n_tilts, 2), np.nan)
    observations[:, ref] = seeds
    if len(seeds) == 0:
        return observations
    matrices = nominal_matrices(tilts, z_rot_deg)
    done = [ref]
    for step in range(1, max(len(c) for c in chains)):
        for chain in chains:
            if step >= len(chain):
                continue
            inner, tilt = chain[step - 1], chain[step]
            points, shifts = linear_points_and_shifts(observations[:, done], matrices[done])
            shift = shifts[done.index(inner)] + coarse[tilt] - coarse[inner]
            predicted = points @ matrices[tilt].T + shift
            predicted[~np.isfinite(observations[:, done, 0]).any(axis=1)] = np.nan
            candidates = np.asarray(detections_px[tilt], dtype=float).reshape(-1, 2)
            for radius in (3.0 * search_radius_px, search_radius_px):
                predicted = predicted + common_offset(predicted, candidates, radius)
            matches = match_points(predicted, candidates, search_radius_px)
            found = matches >= 0
            observations[found, tilt] = candidates[matches[found]]
            done.append(tilt)
    return observations


def fill_gaps(
    observations_px: np.ndarray,
    detections_px: list[np.ndarray],
    solution: AlignmentSolution,
    radius_px: float,
) -> tuple[np.ndarray, int]:
    """Add detections near the solved model's predictions where a kept track has no position.

    Returns the completed observations (a copy) and the number of positions added.
    """
    observations = np.array(observations_px, copy=True)
    matrices = solution.matrices()
    points = np.where(solution.kept_points[:, None], solution.points_px, np.nan)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    added = 0
    for tilt, candidates in enumerate(detections_px):
        missing = ~np.isfinite(observations[:, tilt, 0]) & solution.kept_points
        if not missing.any() or len(candidates) == 0:
            continue
        predicted = homogeneous @ matrices[tilt].T
        predicted[~missing] = np.nan
        taken = np.isfinite(observations[:, tilt, 0])
        free = np.ones(len(candidates), dtype=bool)
        if taken.any():
            distance = np.linalg.norm(
                candidates[:, None, :] - observations[taken, tilt][None, :, :], axis=2
            )
            free = distance.min(axis=1) > 1e-6
        matches = match_points(predicted, np.where(free[:, None], candidates, np.inf), radius_px)
        found = matches >= 0
        observations[found, tilt] = candidates[matches[found]]
        added += int(found.sum())
    return observations, added
