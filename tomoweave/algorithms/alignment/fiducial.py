"""Fiducial (gold-bead) alignment of a whole series: coarse xcorr, detect, track, solve, refine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tomoweave.algorithms.alignment.beads import (
    detect_beads,
    fit_centres,
    refine_centres,
    resolve_polarity,
)
from tomoweave.algorithms.alignment.offset import tilt_offset_from_intensity
from tomoweave.algorithms.alignment.quality import split_half_error, trust_warnings
from tomoweave.algorithms.alignment.solver import (
    AlignmentSolution,
    flatten_points,
    set_tilt_offset,
    solve_alignment,
)
from tomoweave.algorithms.alignment.tracking import fill_gaps, track_beads
from tomoweave.algorithms.alignment.xcorr import bin_image, binned_to_full_px, coarse_align


class NoBeadsError(ValueError):
    """Too few gold beads were found or tracked to solve the model."""


@dataclass
class TrackedSolution:
    """A solved model with the tilts it covers (others had too few tracked points)."""

    solution: AlignmentSolution
    solved_tilts: np.ndarray  # (T,) bool over the input tilts
    observations_px: np.ndarray  # (P, T, 2) over the input tilts
    coarse_shifts_px: np.ndarray  # (T, 2)
    log: list[str] = field(default_factory=list)
    # shift error estimated from independent halves of the data (px; NaN: not measurable)
    estimated_error_px: float = float("nan")
    warnings: list[str] = field(default_factory=list)


def coarse_shifts_full_px(stack: np.ndarray, tilts_deg, z_rot_deg: float, max_size_px: int = 512):
    """Cross-correlation shifts (T, 2) in full-size pixels, computed on a binned copy."""
    factor = max(1, int(np.ceil(max(stack.shape[1:]) / max_size_px)))
    binned = np.stack([bin_image(image, factor) for image in stack])
    shifts, _ = coarse_align(binned, tilts_deg, z_rot_deg)
    return shifts * factor


def detect_in_stack(stack: np.ndarray, bead_diameter_px: float, threshold: float,
                    polarity: str = "dark"):
    """Bead centres (x, y, px from the image centre) per tilt: found binned, refined at full size.

    ``polarity`` is "dark" or "light" (see :func:`beads.resolve_polarity` for "auto")."""
    factor = max(1, int(bead_diameter_px // 6))
    size_xy = (stack.shape[2], stack.shape[1])
    sign = -1.0 if polarity == "light" else 1.0
    detections = []
    for image in stack:
        binned = bin_image(image, factor)
        found, _ = detect_beads(binned, bead_diameter_px / factor, threshold, polarity=polarity)
        if factor > 1 and len(found):
            corner = binned_to_full_px(found, factor, size_xy) + np.array(size_xy) // 2
            signed = sign * image
            found = fit_centres(signed, refine_centres(signed, corner, bead_diameter_px),
                                bead_diameter_px) - np.array(size_xy) // 2
        detections.append(found)
    return detections


TILT_OFFSET_METHODS = ("auto", "intensity", "beads", "none")


def choose_tilt_offset(
    solution: AlignmentSolution, mean_intensity: np.ndarray, method: str, log: list[str]
) -> AlignmentSolution:
    """Set the tilt offset of a solution (fitted at nominal tilts) by ``method``.

    ``intensity``: Beer-Lambert fit of the mean intensity per tilt; ``beads``: make the points
    flat (best with beads on both surfaces of the section); ``auto``: intensity when its fit is
    good, else beads when they form two surface layers, else none.
    """
    if method not in TILT_OFFSET_METHODS:
        raise ValueError(f"tilt_offset_method must be one of {TILT_OFFSET_METHODS}, got {method!r}")
    if method == "none":
        return solution
    nominal = solution.y_tilt_deg
    offset, ratio, misfit = 0.0, 0.0, float("inf")
    if len(nominal) >= 5:
        offset, ratio, misfit = tilt_offset_from_intensity(mean_intensity, nominal)
    intensity_ok = ratio > 0.02 and misfit < 0.1 * ratio
    log.append(f"intensity fit: offset {offset:.3f}°, thickness/mean free path {ratio:.3f}, "
               f"misfit {misfit:.4f} ({'usable' if intensity_ok else 'not usable'})")
    if method == "intensity" or (method == "auto" and intensity_ok):
        return set_tilt_offset(solution, offset)
    flat_offset, x_tilt, layers = flatten_points(solution.points_px[solution.kept_points], log)
    if method == "beads" or layers == 2:
        return set_tilt_offset(solution, flat_offset, x_tilt)
    log.append("tilt offset left at 0: no usable intensity curve and no bead layers")
    return solution


# a global tilt axis less certain than this is not trusted; the nominal axis is kept instead
MAX_AXIS_SIGMA_DEG = 0.2


def solve_covered(observations, tilts_deg, z_rot_deg, min_points_per_tilt=3, **options):
    """Solve on the tilts that have at least ``min_points_per_tilt`` tracked points.

    The offset is left at 0 (see :func:`choose_tilt_offset`). When a global tilt axis comes
    out with a standard error above ``MAX_AXIS_SIGMA_DEG`` (few points, small field), the model
    is solved again with the nominal axis, and the log says so."""
    counts = np.isfinite(observations[..., 0]).sum(axis=0)
    solved = counts >= min_points_per_tilt
    if solved.sum() < 3:
        raise NoBeadsError(
            f"only {int(solved.sum())} tilts have {min_points_per_tilt} or more tracked points"
        )
    tilts = np.asarray(tilts_deg)[solved]
    solution = solve_alignment(observations[:, solved], tilts, z_rot_deg, solve_tilt_offset=False,
                               **options)
    if options.get("z_rot_mode", "global") == "global" and not (
        solution.z_rot_sigma_deg <= MAX_AXIS_SIGMA_DEG
    ):
        found, sigma = float(solution.z_rot_deg[0]), solution.z_rot_sigma_deg
        solution = solve_alignment(observations[:, solved], tilts, z_rot_deg,
                                   solve_tilt_offset=False, **{**options, "z_rot_mode": "fixed"})
        solution.log.append(f"tilt axis {found:.2f}° ± {sigma:.2f}° is too uncertain; "
                            f"kept the nominal {float(np.mean(z_rot_deg)):.2f}°")
    return solution, solved


def _solved_axis_mode(solution: AlignmentSolution, solver_options: dict) -> str:
    """The tilt-axis mode the final fit used ("fixed" when an uncertain axis was replaced)."""
    mode = solver_options.get("z_rot_mode", "global")
    if mode == "global" and not solution.z_rot_sigma_deg <= MAX_AXIS_SIGMA_DEG:
        return "fixed"
    return mode


def align_with_beads(
    stack: np.ndarray,
    tilts_deg: np.ndarray,
    z_rot_deg: float,
    bead_diameter_px: float,
    threshold: float = 8.0,
    search_radius_px: float | None = None,
    min_track_fraction: float = 0.3,
    tilt_offset_method: str = "auto",
    *,
    polarity: str = "auto",
    **solver_options,
) -> TrackedSolution:
    """Detect, track and solve a gold-bead alignment of one tilt series.

    Parameters
    ----------
    stack : array (T, Y, X)
        Tilt images in stack order (excluded tilts already removed).
    tilts_deg : array (T,)
        Nominal tilt angles, degrees.
    z_rot_deg : float
        Nominal in-plane rotation (the tilt-axis angle), degrees.
    bead_diameter_px : float
        Gold bead diameter in pixels of ``stack``.
    threshold : float
        Detection threshold (LoG response in robust standard deviations).
    search_radius_px : float, optional
        Tracking search radius; default twice the bead diameter.
    min_track_fraction : float
        Tracks seen in fewer than this fraction of the tilts are dropped before solving.
    tilt_offset_method : {"auto", "intensity", "beads", "none"}
        How the tilt-angle offset is measured (see :func:`choose_tilt_offset`).
    polarity : {"auto", "dark", "light"}
        Beads darker or lighter than the background; auto decides on the tilt nearest 0°.
    solver_options
        Passed to :func:`solve_alignment` (z_rot_mode, solve_magnification, ...).

    Raises
    ------
    NoBeadsError
        When fewer than 3 beads are found in the tilt nearest 0° or can be tracked.
    """
    tilts = np.asarray(tilts_deg, dtype=float)
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 3 or stack.shape[0] != len(tilts):
        raise ValueError(f"stack must be (T, Y, X) with T = {len(tilts)}, got {stack.shape}")
    if len(tilts) < 3:
        raise ValueError(f"alignment needs at least 3 tilts, got {len(tilts)}")
    radius = 2.0 * bead_diameter_px if search_radius_px is None else search_radius_px
    log: list[str] = []
    coarse = coarse_shifts_full_px(stack, tilts, z_rot_deg)
    ref = int(np.argmin(np.abs(tilts)))
    factor = max(1, int(bead_diameter_px // 6))
    polarity, line = resolve_polarity(bin_image(stack[ref], factor), bead_diameter_px / factor,
                                      polarity, threshold)
    log.append(line)
    detections = detect_in_stack(stack, bead_diameter_px, threshold, polarity)
    log.append(f"{len(detections[ref])} beads found at {tilts[ref]:.1f}°, "
               f"median {np.median([len(d) for d in detections]):.0f} per tilt")
    if len(detections[ref]) < 3:
        raise NoBeadsError(
            f"{len(detections[ref])} gold beads found in the tilt at {tilts[ref]:.1f}° "
            f"(diameter {bead_diameter_px:.1f} px, threshold {threshold}); need at least 3"
        )
    observations = track_beads(detections, tilts, z_rot_deg, radius, coarse)
    long_enough = np.isfinite(observations[..., 0]).sum(axis=1) >= max(
        3, min_track_fraction * len(tilts)
    )
    observations = observations[long_enough]
    log.append(f"{int(long_enough.sum())} tracks seen in ≥{min_track_fraction:.0%} of tilts")
    if len(observations) < 3:
        raise NoBeadsError(f"only {len(observations)} beads could be tracked through the series")
    solution, solved = solve_covered(observations, tilts, z_rot_deg, **solver_options)
    full = np.full((len(observations), len(tilts), 2), np.nan)
    full[:, solved] = observations[:, solved]
    refilled, added = fill_gaps(
        full[:, solved], [d for d, s in zip(detections, solved, strict=True) if s], solution,
        max(0.5 * bead_diameter_px, 2.0),
    )
    if added:
        full[:, solved] = refilled
        solution, solved_again = solve_covered(full, tilts, z_rot_deg, **solver_options)
        solved = solved_again
    log.append(f"gap filling added {added} positions")
    log.extend(solution.log)
    error, compared = split_half_error(
        full[:, solved], tilts[solved], solution, (stack.shape[2], stack.shape[1]),
        z_rot_mode=_solved_axis_mode(solution, solver_options),
        solve_magnification=solver_options.get("solve_magnification", True),
        outlier_k=solver_options.get("outlier_k", 4.0))
    log.append(f"estimated alignment error {error:.3f} px (two halves of "
               f"{int(solution.kept_points.sum())} beads, {compared} tilts)")
    means = stack.mean(axis=(1, 2))[solved]
    solution = choose_tilt_offset(solution, means, tilt_offset_method, log)
    return TrackedSolution(solution, solved, full, coarse, log, error,
                           trust_warnings(error, int(solution.kept_points.sum()), "beads"))
