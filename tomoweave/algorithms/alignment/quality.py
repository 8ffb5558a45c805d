"""How good is a solved alignment? An error estimate from two independent halves of the data.

The residual of a fit says how well the model explains the points it was fitted to, not how far
its shifts are from the truth: with many points per tilt it is small even when a few points
carry a common error, and with points that are not rigid 3D features (blobs that change shape,
patches) it can be small while the shifts are off. Splitting the tracked points into two halves
and solving each alone gives two independent sets of shifts; if each point's error is
independent, each half's alignment errs by sqrt(2) times the full set's, and their difference by
2 times, so half the RMS difference estimates the full set's error.

Alignments are compared as the sample sees them: points spread through the field (a grid over
the image and the depth of the tracked points) are projected with both, after the best common
3D translation (nothing fixes where the tomogram's centre is) — so errors of shifts,
magnifications and angles count alike, in pixels of the images.
"""

from __future__ import annotations

import numpy as np

from tomoweave.algorithms.alignment.solver import AlignmentSolution, solve_alignment

# an alignment whose estimated shift error exceeds this is reported as not trustworthy
MAX_TRUSTED_ERROR_PX = 0.5
MIN_POINTS_PER_HALF_TILT = 3


def field_points_px(image_size_xy: tuple[int, int], depth_px: float) -> np.ndarray:
    """(75, 3) points on a 5×5×3 grid over 80 % of the image and ``±depth_px`` in z."""
    extent = [0.4 * image_size_xy[0], 0.4 * image_size_xy[1], depth_px]
    axes = [np.linspace(-e, e, n) for e, n in zip(extent, (5, 5, 3), strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def reprojection_rms(matrices_px: np.ndarray, reference_px: np.ndarray,
                     points_px: np.ndarray) -> float:
    """RMS distance (px) between the projections of ``points_px`` by two sets of matrices,
    after the 3D translation of the points under ``matrices_px`` that best matches them.

    Parameters
    ----------
    matrices_px, reference_px : arrays (T, 2, 4) or (T, 3|4, 4)
        Projection matrices (px from the tomogram centre -> px from the image centre).
    points_px : array (N, 3)
    """
    a, b = np.asarray(matrices_px)[:, :2], np.asarray(reference_px)[:, :2]
    homogeneous = np.concatenate([points_px, np.ones((len(points_px), 1))], axis=1)
    found = np.einsum("tij,nj->tni", a, homogeneous)
    true = np.einsum("tij,nj->tni", b, homogeneous)
    design = np.repeat(a[:, None, :, :3], len(points_px), axis=1).reshape(-1, 3)
    translation = np.linalg.lstsq(design, (true - found).reshape(-1), rcond=None)[0]
    error = found + np.einsum("tij,j->ti", a[:, :, :3], translation)[:, None] - true
    return float(np.sqrt(np.mean(np.sum(error**2, axis=2))))


def split_half_error(
    observations_px: np.ndarray,
    tilts_deg: np.ndarray,
    solution: AlignmentSolution,
    image_size_xy: tuple[int, int],
    *,
    z_rot_mode: str = "fixed",
    solve_magnification: bool = False,
    outlier_k: float = 4.0,
) -> tuple[float, int]:
    """Estimated RMS shift error (px) of ``solution`` from two halves of its kept points.

    Parameters
    ----------
    observations_px : array (P, T, 2)
        The observations the solution was fitted to (px from the image centre; NaN if unseen).
    tilts_deg : array (T,)
        The tilt angles the solution was fitted with (before any tilt offset was set).
    solution : AlignmentSolution
        The full fit; the halves start from its in-plane rotations.
    image_size_xy : (int, int)
        Image size, px: the compared points span it.
    z_rot_mode, solve_magnification, outlier_k
        As for the full fit (each half solves what the full fit solved).

    Returns
    -------
    error_px : float (NaN when the halves cannot be solved: too few points)
        Half the RMS difference of the two halves' reprojections (:func:`reprojection_rms`).
    n_tilts : int
        Tilts compared (those with at least 3 points in each half).
    """
    kept = np.nonzero(solution.kept_points)[0]
    if len(kept) < 2 * MIN_POINTS_PER_HALF_TILT:
        return float("nan"), 0
    observed = np.where(solution.kept_observations[..., None], observations_px, np.nan)
    halves = [observed[kept[0::2]], observed[kept[1::2]]]
    counts = np.stack([np.isfinite(h[..., 0]).sum(axis=0) for h in halves])
    tilts = np.nonzero((counts >= MIN_POINTS_PER_HALF_TILT).all(axis=0))[0]
    if len(tilts) < 3:
        return float("nan"), 0
    fits = []
    for half in halves:
        try:
            fit = solve_alignment(half[:, tilts], np.asarray(tilts_deg)[tilts],
                                  solution.z_rot_deg[tilts], z_rot_mode=z_rot_mode,
                                  solve_magnification=solve_magnification,
                                  solve_tilt_offset=False, outlier_k=outlier_k)
        except ValueError:
            return float("nan"), 0
        fits.append(fit.matrices())
    depth = float(np.nanmax(np.abs(solution.points_px[kept, 2]))) if len(kept) else 0.0
    points = field_points_px(image_size_xy, depth)
    return 0.5 * reprojection_rms(fits[0], fits[1], points), len(tilts)


def trust_warnings(error_px: float, n_points: int, what: str) -> list[str]:
    """Warnings for an alignment whose estimated error is large or cannot be measured."""
    if not np.isfinite(error_px):
        return [f"WARNING alignment not checked: {n_points} {what} are too few to solve two "
                f"independent halves; its error is unknown"]
    if error_px > MAX_TRUSTED_ERROR_PX:
        return [f"WARNING alignment not trustworthy: estimated error {error_px:.2f} px "
                f"(two independent halves of the {what} disagree; > {MAX_TRUSTED_ERROR_PX} px)"]
    return []
