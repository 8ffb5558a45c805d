"""Tilt-series alignment: coarse cross-correlation, gold beads, patch tracking, model solver.

Every function works in pixels, with image positions counted from the image centre (N // 2) in
(x, y) order, and solves the projection model of ``tomoweave.geometry.projection_matrix``.
"""

from tomoweave.algorithms.alignment.solver import (
    AlignmentSolution,
    linear_points_and_shifts,
    nominal_matrices,
    solve_alignment,
    translation_free_rms,
)

__all__ = [
    "AlignmentSolution",
    "linear_points_and_shifts",
    "nominal_matrices",
    "solve_alignment",
    "translation_free_rms",
]
