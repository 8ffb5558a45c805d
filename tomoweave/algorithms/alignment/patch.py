"""Marker-free alignment by patch tracking.

A grid of patches is laid on the tilt nearest 0°. Each patch is followed outwards tilt by tilt:
the patch of the inner tilt is stretched into the geometry of the next tilt (cosine stretching
across the tilt axis) and cross-correlated with the window where the coarse alignment predicts
it; the correlation peak gives the patch centre in the new tilt. A track ends where the peak is
weak or the window leaves the image. The chained centres are points of the specimen like beads,
and the same model solver turns them into the alignment.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.fft

from tomoweave.algorithms.alignment.fiducial import (
    NoBeadsError,
    TrackedSolution,
    choose_tilt_offset,
    coarse_shifts_full_px,
    solve_covered,
)
from tomoweave.algorithms.alignment.projmatch import HeldOutMatcher, guarded_rounds
from tomoweave.algorithms.alignment.solver import linear_points_and_shifts, nominal_matrices
from tomoweave.algorithms.alignment.xcorr import (
    bandpass,
    bin_image,
    binned_to_full_px,
    stretch_matrix,
    subpixel_peak,
    taper,
    tilt_order,
    warp_centered,
)
from tomoweave.algorithms.binning import fourier_bin_image


def _window(image: np.ndarray, centre_px: np.ndarray, size: int) -> np.ndarray | None:
    """The size×size window of ``image`` whose centre index (size // 2) is at ``centre_px``.

    ``centre_px`` is an integer (x, y) position from the image centre; None when it leaves the
    image.
    """
    ny, nx = image.shape
    x0 = int(centre_px[0]) + nx // 2 - size // 2
    y0 = int(centre_px[1]) + ny // 2 - size // 2
    if x0 < 0 or y0 < 0 or x0 + size > nx or y0 + size > ny:
        return None
    return image[y0 : y0 + size, x0 : x0 + size]


def patch_grid(
    shape_yx: tuple[int, int], patch_size_px: int, spacing_px: float, margin_px: int
) -> np.ndarray:
    """Patch centres (x, y), px from the image centre, on a square grid inside the margins."""
    limits = [(s // 2 - patch_size_px // 2 - margin_px) for s in shape_yx[::-1]]
    axes = []
    for limit in limits:
        count = max(1, int(2 * limit // spacing_px) + 1)
        axes.append(np.round(np.linspace(-limit, limit, count)) if limit > 0 else np.zeros(1))
    gx, gy = np.meshgrid(axes[0], axes[1])
    return np.column_stack([gx.ravel(), gy.ravel()])


class _PatchMatcher:
    """Cross-correlation of one inner-tilt patch (stretched) with the outer-tilt window."""

    def __init__(self, patch_size_px: int, lowpass: float, highpass: float):
        self.size = patch_size_px
        self.big = int(np.ceil(1.5 * patch_size_px / 2)) * 2
        self.window = taper((patch_size_px, patch_size_px), 0.25)
        self.weights = bandpass((patch_size_px, patch_size_px), lowpass, highpass)

    def prepare(self, patch: np.ndarray) -> np.ndarray:
        patch = patch - patch.mean()
        return (patch * self.window).astype(np.float32)

    def correlate(self, inner_image, outer_image, anchor, predicted, matrix):
        """Correlation map and the map of positions its pixels stand for, or None off the image.

        Pixel (y, x) of the returned map, at displacement d from its centre, says the patch
        anchored at ``anchor`` in the inner tilt sits at ``base + d`` in the outer tilt.
        """
        inner_centre, outer_centre = np.round(anchor), np.round(predicted)
        big = _window(inner_image, inner_centre, self.big)
        outer = _window(outer_image, outer_centre, self.size)
        if big is None or outer is None:
            return None
        stretched = warp_centered(big, np.linalg.inv(matrix))
        start = self.big // 2 - self.size // 2
        reference = stretched[start : start + self.size, start : start + self.size]
        spectrum = np.conj(scipy.fft.rfft2(self.prepare(reference))) * scipy.fft.rfft2(
            self.prepare(outer)
        )
        correlation = scipy.fft.fftshift(
            scipy.fft.irfft2(spectrum * self.weights, s=reference.shape)
        )
        base = outer_centre + matrix @ (anchor - inner_centre)
        return correlation, base

    def peak(self, correlation, base, expected, radius):
        """Best position within ``radius`` of ``expected`` and its strength (std of the map)."""
        centre = self.size // 2
        offset = expected - base
        yy, xx = np.ogrid[: self.size, : self.size]
        allowed = (xx - centre - offset[0]) ** 2 + (yy - centre - offset[1]) ** 2 <= radius**2
        allowed &= (xx > 0) & (xx < self.size - 1) & (yy > 0) & (yy < self.size - 1)
        if not allowed.any():
            return None, 0.0
        index = np.unravel_index(int(np.argmax(np.where(allowed, correlation, -np.inf))),
                                 correlation.shape)
        peak_y, peak_x = subpixel_peak(correlation, index)
        std = float(correlation.std())
        strength = float((correlation[index] - correlation.mean()) / std) if std > 0 else 0.0
        return base + np.array([peak_x - centre, peak_y - centre]), strength


def track_patches(
    stack: np.ndarray,
    tilts_deg: np.ndarray,
    z_rot_deg: float,
    coarse_shifts_px: np.ndarray,
    patch_size_px: int = 64,
    spacing_px: float | None = None,
    min_strength: float = 4.0,
    search_px: float = 3.0,
    lowpass: float = 0.3,
    highpass: float = 0.05,
) -> np.ndarray:
    """Follow a grid of patches from the tilt nearest 0° outwards.

    Like bead tracking, every track's 3D position is fitted from the tilts done so far and
    predicts the next; the predictions are moved together by the median offset of the best
    correlation peaks, then each patch takes the peak within ``search_px`` of its prediction.
    A weak peak leaves a gap, and the track goes on from its predicted position.

    Parameters
    ----------
    stack : array (T, Y, X)
    tilts_deg : array (T,)
        Nominal tilt angles in stack order, degrees.
    z_rot_deg : float
        Nominal in-plane rotation (tilt-axis angle), degrees.
    coarse_shifts_px : array (T, 2)
        Coarse shifts in pixels of ``stack`` (predict each new tilt's shift).
    patch_size_px : int
        Side of the square patches, px.
    spacing_px : float, optional
        Grid spacing; default ``0.5 * patch_size_px``.
    min_strength : float
        Weakest accepted correlation peak, in standard deviations of the correlation map.
    search_px : float
        Largest distance of a patch from its (offset-corrected) prediction.

    Returns
    -------
    observations_px : array (P, T, 2), patch centres (x, y) from the image centre; NaN where lost.
    """
    stack = np.asarray(stack, dtype=np.float32)
    tilts = np.asarray(tilts_deg, dtype=float)
    coarse = np.asarray(coarse_shifts_px, dtype=float)
    spacing = 0.5 * patch_size_px if spacing_px is None else spacing_px
    margin = int(np.ceil(0.25 * patch_size_px)) + 2
    ref, chains = tilt_order(tilts)
    start = patch_grid(stack.shape[1:], patch_size_px, spacing, margin)
    observations = np.full((len(start), len(tilts), 2), np.nan)
    observations[:, ref] = start
    anchors = observations.copy()  # found or predicted position of every track in every tilt
    matrices = nominal_matrices(tilts, z_rot_deg)
    matcher = _PatchMatcher(patch_size_px, lowpass, highpass)
    done = [ref]
    for step in range(1, max(len(c) for c in chains)):
        for chain in chains:
            if step >= len(chain):
                continue
            inner, outer = chain[step - 1], chain[step]
            points, shifts = linear_points_and_shifts(observations[:, done], matrices[done])
            predicted = points @ matrices[outer].T + shifts[done.index(inner)]
            predicted += coarse[outer] - coarse[inner]
            stretch = stretch_matrix(tilts[outer], tilts[inner], z_rot_deg)
            maps = [
                matcher.correlate(stack[inner], stack[outer], anchors[p, inner], predicted[p],
                                  stretch)
                if np.isfinite(anchors[p, inner, 0]) else None
                for p in range(len(start))
            ]
            free = [matcher.peak(m[0], m[1], predicted[p], patch_size_px / 4)
                    if m is not None else (None, 0.0) for p, m in enumerate(maps)]
            moves = [f - predicted[p] for p, (f, s) in enumerate(free) if f is not None
                     and s >= min_strength]
            common = np.median(moves, axis=0) if len(moves) >= 3 else np.zeros(2)
            for p, m in enumerate(maps):
                if m is None:
                    continue
                anchors[p, outer] = predicted[p] + common
                found, strength = matcher.peak(m[0], m[1], predicted[p] + common, search_px)
                if found is not None and strength >= min_strength:
                    observations[p, outer] = anchors[p, outer] = found
            done.append(outer)
    return observations


def align_with_patches(
    stack: np.ndarray,
    tilts_deg: np.ndarray,
    z_rot_deg: float,
    patch_size_px: int = 64,
    max_size_px: int = 512,
    min_strength: float = 4.0,
    min_track_fraction: float = 0.3,
    tilt_offset_method: str = "auto",
    refine_thickness_px: float | None = None,
    refine_rounds: int = 3,
    refine_size_px: int = 128,
    *,
    start_shifts_px: np.ndarray | None = None,
    **solver_options,
) -> TrackedSolution:
    """Marker-free alignment: coarse xcorr, patch tracking, model solve, projection matching.

    ``patch_size_px`` is in pixels of the binned copy (largest side ≤ ``max_size_px``); the
    result is in pixels of ``stack``. ``solver_options`` go to :func:`solve_alignment`.

    1. Coarse shifts by cross-correlation at the nominal axis.
    2. Patches tracked and solved with the same model as beads (tilt angles and offset,
       shifts, and the axis as ``z_rot_mode`` says).
    3. The shifts refined by projection matching on a copy binned to at most
       ``refine_size_px``, from the best-scoring start (coarse, patch model, or
       ``start_shifts_px``, e.g. from align.xcorr) by the held-out score
       (:meth:`projmatch.HeldOutMatcher.evaluate`: each tilt against the re-projection of the
       others), up to ``refine_rounds + 1`` rounds with a slab of ``refine_thickness_px``,
       each kept only when the held-out score improves. None: no refinement.

    The reported residual is that of the patch tracks under the final alignment.
    """
    tilts = np.asarray(tilts_deg, dtype=float)
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 3 or stack.shape[0] != len(tilts):
        raise ValueError(f"stack must be (T, Y, X) with T = {len(tilts)}, got {stack.shape}")
    if len(tilts) < 3:
        raise ValueError(f"alignment needs at least 3 tilts, got {len(tilts)}")
    factor = max(1, int(np.ceil(max(stack.shape[1:]) / max_size_px)))
    if min(stack.shape[1:]) // factor < 2 * patch_size_px:
        raise ValueError(
            f"patch_size_px {patch_size_px} is too large for images of {stack.shape[2]}×"
            f"{stack.shape[1]} px binned {factor}×"
        )
    log: list[str] = []
    coarse = coarse_shifts_full_px(stack, tilts, z_rot_deg, max_size_px)
    binned = np.stack([bin_image(image, factor) for image in stack])
    tracks = track_patches(binned, tilts, z_rot_deg, coarse / factor, patch_size_px,
                           min_strength=min_strength)
    size_xy = (stack.shape[2], stack.shape[1])
    observations = binned_to_full_px(tracks, factor, size_xy) if factor > 1 else tracks
    long_enough = np.isfinite(observations[..., 0]).sum(axis=1) >= max(
        3, min_track_fraction * len(tilts)
    )
    observations = observations[long_enough]
    log.append(f"{len(tracks)} patches, {int(long_enough.sum())} tracked through "
               f"≥{min_track_fraction:.0%} of tilts (binning {factor})")
    if len(observations) < 3:
        raise NoBeadsError(f"only {len(observations)} patches could be tracked through the series")
    solution, solved = solve_covered(observations, tilts, z_rot_deg, **solver_options)
    full = np.full((len(observations), len(tilts), 2), np.nan)
    full[:, solved] = observations[:, solved]
    log.extend(solution.log)
    means = stack.mean(axis=(1, 2))[solved]
    solution = choose_tilt_offset(solution, means, tilt_offset_method, log)
    if refine_thickness_px is not None and refine_rounds > 0:
        starts = {"coarse": coarse[solved], "patch model": solution.shifts_px}
        if start_shifts_px is not None:
            starts["given start"] = np.asarray(start_shifts_px, dtype=float)[solved]
        solution = _refine(stack[solved], solution, starts, refine_thickness_px,
                           refine_rounds, refine_size_px, log)
    solution = residuals_under(full[:, solved], solution)
    log.append(f"residual of the patch tracks under the final alignment "
               f"{solution.mean_residual_px:.3f} px")
    return TrackedSolution(solution, solved, full, coarse, log)


def residuals_under(observations_px: np.ndarray, solution):
    """``solution`` with residuals of ``observations_px`` under its own matrices (each
    track's 3D point refitted by least squares with the matrices fixed)."""
    matrices = solution.matrices()  # (T, 2, 4)
    residuals = np.full(observations_px.shape, np.nan)
    kept = solution.kept_observations & np.isfinite(observations_px[..., 0])
    points = np.full((len(observations_px), 3), np.nan)
    for p in range(len(observations_px)):
        seen = np.nonzero(kept[p])[0]
        if len(seen) < 2:
            continue
        design = matrices[seen, :, :3].reshape(-1, 3)
        target = (observations_px[p, seen] - matrices[seen, :, 3]).reshape(-1)
        points[p] = np.linalg.lstsq(design, target, rcond=None)[0]
        residuals[p, seen] = observations_px[p, seen] - (
            np.einsum("tij,j->ti", matrices[seen, :, :3], points[p]) + matrices[seen, :, 3])
    norms = np.linalg.norm(residuals, axis=2)
    with np.errstate(invalid="ignore"):
        per_tilt = np.nanmean(norms, axis=0)
    finite = np.isfinite(norms)
    return replace(solution, residuals_px=residuals, tilt_residual_px=per_tilt,
                   mean_residual_px=float(norms[finite].mean()) if finite.any() else np.nan,
                   points_px=np.where(np.isfinite(points), points, solution.points_px))


def _refine(stack, solution, starts, thickness_px, rounds, size_px, log):
    """Projection-matching refinement of the shifts from the best-scoring start, every round
    kept only when the held-out score improves (see align_with_patches)."""
    factor = max(1, int(np.ceil(max(stack.shape[1:]) / size_px)))
    binned = np.stack([fourier_bin_image(image, factor) for image in stack])
    z_rot = np.asarray(solution.z_rot_deg, dtype=float)
    judge = HeldOutMatcher(binned, solution.y_tilt_deg, thickness_px / factor)
    scores = {name: judge.evaluate(z_rot, shifts / factor)[0] for name, shifts in starts.items()}
    best = max(scores, key=scores.get)
    log.append("held-out score of the starts: " + ", ".join(
        f"{name} {score:.4f}" for name, score in scores.items()) + f"; refining from {best}")
    shifts, score = _matching(judge, z_rot, starts[best] / factor, rounds, factor,
                              thickness_px, log)
    return replace(solution, shifts_px=shifts * factor)


def _matching(judge, z_rot, shifts, rounds, factor, thickness_px, log):
    shifts, score, updates = guarded_rounds(judge, z_rot, shifts, rounds + 1)
    log.append(f"projection matching, slab {thickness_px:.0f} px: {len(updates)} rounds "
               f"accepted (RMS corrections " + ", ".join(f"{u * factor:.2f}" for u in updates)
               + f" px), held-out score {score:.4f}")
    return shifts, score
