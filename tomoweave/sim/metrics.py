"""Scores of results against a simulation's ground truth: alignment, CTF, picking, orientations.

Every function takes the truth (``SeriesTruth``) and model objects or arrays, and returns plain
numbers in Å / degrees so tests can state thresholds directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tomoweave.geometry.projection import project_points_a, projection_matrix
from tomoweave.geometry.rotations import rotation_angle_between_deg
from tomoweave.model import CtfTilt, Particle, TiltAlignment
from tomoweave.sim.truth import SeriesTruth


def _matrix(alignment: TiltAlignment) -> np.ndarray:
    return projection_matrix(alignment.y_tilt_deg, alignment.x_tilt_deg, alignment.z_rot_deg,
                             alignment.shift_x_a, alignment.shift_y_a, alignment.magnification)


def _test_points_a(truth: SeriesTruth) -> np.ndarray:
    """Beads plus a 5×5×3 grid spanning the tomogram: errors anywhere in the field count."""
    size_a = np.array(truth.tomogram_size_xyz) * truth.pixel_size_a
    extent = np.array([0.4, 0.4, 0.0]) * size_a + np.array([0.0, 0.0, truth.thickness_a / 3])
    axes = [np.linspace(-e, e, n) for e, n in zip(extent, (5, 5, 3), strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    beads = np.array(truth.beads_a, dtype=float).reshape(-1, 3)
    return np.concatenate([beads, grid])


def alignment_errors(truth: SeriesTruth, alignments: Sequence[TiltAlignment | None],
                     allow_offset: bool = True) -> dict:
    """Reprojection error of an estimated alignment, per tilt and overall (Å and px).

    Points (beads and a grid through the tomogram) are projected with the true and with the
    estimated matrices. A tilt series fixes the tomogram only up to a translation (nothing says
    where its centre is), so with ``allow_offset`` the best 3D offset of the points under the
    estimate is found first (least squares) and reported. ``None`` alignments (excluded tilts)
    are skipped. Angles are compared directly too (estimate − truth).
    """
    if len(alignments) != len(truth.tilts):
        raise ValueError(f"{len(alignments)} alignments for {len(truth.tilts)} tilts")
    points = _test_points_a(truth)
    used = [i for i, a in enumerate(alignments) if a is not None]
    true_2d = [project_points_a(truth.tilts[i].projection_matrix(), points) for i in used]
    estimated = [_matrix(alignments[i]) for i in used]
    offset = np.zeros(3)
    if allow_offset:  # residual r_i = A_i (p + t) + s_i − true  → linear in t
        lhs = np.concatenate([np.tile(m[:2, :3], (len(points), 1)) for m in estimated])
        rhs = np.concatenate([(true - project_points_a(m, points)).reshape(-1)
                              for m, true in zip(estimated, true_2d, strict=True)])
        offset = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    per_tilt = np.full(len(truth.tilts), np.nan)
    for index, matrix, true in zip(used, estimated, true_2d, strict=True):
        error = project_points_a(matrix, points + offset) - true
        per_tilt[index] = float(np.sqrt((error**2).sum(1).mean()))
    angle_diffs = {
        key: np.array([getattr(alignments[i], key) - getattr(truth.tilts[i], key) for i in used])
        for key in ("y_tilt_deg", "x_tilt_deg", "z_rot_deg")
    }
    return {
        "rms_a": float(np.sqrt(np.nanmean(per_tilt**2))),
        "rms_px": float(np.sqrt(np.nanmean(per_tilt**2)) / truth.pixel_size_a),
        "max_a": float(np.nanmax(per_tilt)),
        "per_tilt_a": per_tilt.tolist(),
        "offset_a": offset.tolist(),
        "z_rot_error_deg": float(np.mean(angle_diffs["z_rot_deg"])),
        "y_tilt_error_deg": float(np.mean(angle_diffs["y_tilt_deg"])),
        "x_tilt_error_deg": float(np.mean(angle_diffs["x_tilt_deg"])),
    }


def ctf_errors(truth: SeriesTruth, ctfs: Sequence[CtfTilt | None]) -> dict:
    """Defocus errors of estimated CTFs per tilt (estimate − truth, Å) and summaries."""
    if len(ctfs) != len(truth.tilts):
        raise ValueError(f"{len(ctfs)} CTFs for {len(truth.tilts)} tilts")
    mean_errors, astig_errors, angle_errors = [], [], []
    for ctf, tilt in zip(ctfs, truth.tilts, strict=True):
        if ctf is None:
            mean_errors.append(np.nan)
            astig_errors.append(np.nan)
            angle_errors.append(np.nan)
            continue
        mean_errors.append(0.5 * (ctf.defocus_u_a + ctf.defocus_v_a
                                  - tilt.defocus_u_a - tilt.defocus_v_a))
        astig_errors.append(abs(ctf.defocus_u_a - ctf.defocus_v_a)
                            - abs(tilt.defocus_u_a - tilt.defocus_v_a))
        difference = (ctf.astigmatism_angle_deg - tilt.astigmatism_angle_deg + 90) % 180 - 90
        angle_errors.append(difference)
    mean_errors = np.array(mean_errors)
    return {
        "defocus_errors_a": mean_errors.tolist(),
        "defocus_rms_a": float(np.sqrt(np.nanmean(mean_errors**2))),
        "defocus_max_a": float(np.nanmax(np.abs(mean_errors))),
        "astigmatism_errors_a": astig_errors,
        "astigmatism_angle_errors_deg": angle_errors,
    }


def match_positions(true_a: np.ndarray, found_a: np.ndarray, tolerance_a: float):
    """One-to-one matches within ``tolerance_a`` minimising total distance: (i_true, i_found)."""
    true_a = np.asarray(true_a, dtype=float).reshape(-1, 3)
    found_a = np.asarray(found_a, dtype=float).reshape(-1, 3)
    if not len(true_a) or not len(found_a):
        return np.zeros(0, int), np.zeros(0, int)
    distance = np.linalg.norm(true_a[:, None] - found_a[None], axis=-1)
    cost = np.where(distance <= tolerance_a, distance, 1e9)
    rows, cols = linear_sum_assignment(cost)
    keep = distance[rows, cols] <= tolerance_a
    return rows[keep], cols[keep]


def picking_scores(truth: SeriesTruth, found_a: np.ndarray, tolerance_a: float,
                   template: str | None = None) -> dict:
    """Precision, recall and F1 of picked positions (Å from the tomogram centre) vs the truth."""
    true_a = truth.particle_positions_a(template)
    rows, cols = match_positions(true_a, found_a, tolerance_a)
    found_count = len(np.asarray(found_a).reshape(-1, 3))
    precision = len(rows) / found_count if found_count else 0.0
    recall = len(rows) / len(true_a) if len(true_a) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    distances = np.linalg.norm(true_a[rows] - np.asarray(found_a).reshape(-1, 3)[cols], axis=1)
    return {"precision": precision, "recall": recall, "f1": f1, "matched": int(len(rows)),
            "true_count": int(len(true_a)), "found_count": found_count,
            "mean_distance_a": float(distances.mean()) if len(distances) else float("nan")}


def orientation_errors_deg(truth: SeriesTruth, particles: Sequence[Particle],
                           tolerance_a: float, template: str | None = None) -> np.ndarray:
    """Rotation angle (°) between each matched found particle and its true orientation."""
    chosen = [p for p in truth.placed_particles if template in (None, p.template)]
    true_a = np.array([p.position_a for p in chosen], dtype=float).reshape(-1, 3)
    found_a = np.array([p.position_a for p in particles], dtype=float).reshape(-1, 3)
    rows, cols = match_positions(true_a, found_a, tolerance_a)
    return np.array([rotation_angle_between_deg(np.array(chosen[r].rotation),
                                                particles[c].rotation_matrix)
                     for r, c in zip(rows, cols, strict=True)])


def adjusted_rand_index(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Adjusted Rand index of two partitions of the same items (Hubert & Arabie 1985): 1 for
    identical partitions (whatever the label names), about 0 for independent ones."""
    a = np.unique(np.asarray(labels_a).ravel(), return_inverse=True)[1]
    b = np.unique(np.asarray(labels_b).ravel(), return_inverse=True)[1]
    if len(a) != len(b):
        raise ValueError(f"partitions of {len(a)} and {len(b)} items")
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return float(np.sum(x * (x - 1) / 2.0))

    both, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    total = len(a) * (len(a) - 1) / 2.0
    expected = rows * cols / total if total else 0.0
    maximum = 0.5 * (rows + cols)
    return 1.0 if maximum == expected else float((both - expected) / (maximum - expected))
