"""Acquisition order of tilt schemes and the dose each tilt received before it was exposed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dose_symmetric_order(tilts_deg: Sequence[float], group_size: int = 2,
                         start_deg: float = 0.0) -> list[int]:
    """Indices of ``tilts_deg`` in Hagen's dose-symmetric order, as SerialEM runs it.

    The start tilt counts as the first of a group on the positive side; then groups of
    ``group_size`` alternate between the negative and positive sides moving outwards. With
    groups of 2 and ±60° in 3° steps this is the order of the real TS_01.mdoc
    (0, 3, -3, -6, 6, 9, -9, ...).
    """
    tilts = np.asarray(tilts_deg, dtype=float)
    start = int(np.argmin(np.abs(tilts - start_deg)))
    positive = [int(i) for i in np.argsort(tilts) if tilts[i] > tilts[start]]
    negative = [int(i) for i in np.argsort(-tilts) if tilts[i] < tilts[start]]
    order = [start, *positive[: group_size - 1]]
    del positive[: group_size - 1]
    sides = (negative, positive)
    turn = 0
    while negative or positive:
        side = sides[turn % 2]
        order.extend(side[:group_size])
        del side[:group_size]
        turn += 1
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
