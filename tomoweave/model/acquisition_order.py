"""Acquisition order of tilt schemes and the dose each tilt received before it was exposed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dose_symmetric_order(tilts_deg: Sequence[float], group_size: int = 2) -> list[int]:
    """Indices of ``tilts_deg`` in Hagen's dose-symmetric order.

    Starts at the tilt nearest 0°, then alternates between the positive and the negative side in
    groups of ``group_size`` tilts, moving outwards; the longer side finishes alone.
    """
    tilts = np.asarray(tilts_deg, dtype=float)
    start = int(np.argmin(np.abs(tilts)))
    positive = sorted((i for i in range(len(tilts)) if i != start and tilts[i] >= tilts[start]),
                      key=lambda i: tilts[i])
    negative = sorted((i for i in range(len(tilts)) if i != start and tilts[i] < tilts[start]),
                      key=lambda i: -tilts[i])
    order = [start]
    while positive or negative:
        for side in (positive, negative):
            order.extend(side[:group_size])
            del side[:group_size]
    return order


def bidirectional_order(tilts_deg: Sequence[float], start_deg: float = 0.0) -> list[int]:
    """Indices in bidirectional order: from ``start_deg`` to one end, then the other side."""
    tilts = np.asarray(tilts_deg, dtype=float)
    first = sorted((i for i in range(len(tilts)) if tilts[i] >= start_deg), key=lambda i: tilts[i])
    second = sorted((i for i in range(len(tilts)) if tilts[i] < start_deg), key=lambda i: -tilts[i])
    return first + second


def pre_exposures_e_a2(order: Sequence[int], dose_per_tilt_e_a2: Sequence[float]) -> np.ndarray:
    """Dose received by each tilt before its own exposure, e/Å², indexed like the tilts.

    ``order`` lists tilt indices in acquisition order; ``dose_per_tilt_e_a2[i]`` is tilt i's dose.
    """
    doses = np.asarray(dose_per_tilt_e_a2, dtype=float)
    pre = np.zeros(len(doses))
    accumulated = 0.0
    for index in order:
        pre[index] = accumulated
        accumulated += doses[index]
    return pre


def order_ranks(order: Sequence[int]) -> list[int]:
    """Acquisition rank of each tilt (0 = first exposed) from the acquisition order."""
    ranks = [0] * len(order)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks
