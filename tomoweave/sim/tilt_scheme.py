"""Tilt schemes: the nominal angles, the order they are exposed in, and the dose before each.

Dose-symmetric follows SerialEM's Hagen scheme: the start tilt counts as part of the first group
on the positive side, then groups of ``group_size`` alternate between sides moving outwards. With
group size 2 and ±60° in 3° steps this is exactly the order of the real TS_01.mdoc
(0, 3, -3, -6, 6, 9, -9, ...).
"""

from __future__ import annotations

import numpy as np


def tilt_angles_deg(min_deg: float, max_deg: float, step_deg: float) -> np.ndarray:
    """Nominal tilts from ``min_deg`` to ``max_deg`` (inclusive) every ``step_deg``, ascending."""
    count = int(np.floor((max_deg - min_deg) / step_deg + 1e-6)) + 1
    angles = min_deg + step_deg * np.arange(count)
    return np.round(angles, 6)


def dose_symmetric_order(angles_deg: np.ndarray, group_size: int = 2,
                         start_deg: float = 0.0) -> list[int]:
    """Indices of ``angles_deg`` in Hagen dose-symmetric acquisition order."""
    angles = np.asarray(angles_deg, dtype=float)
    start = int(np.argmin(np.abs(angles - start_deg)))
    positive = [i for i in np.argsort(angles) if angles[i] > angles[start]]
    negative = [i for i in np.argsort(-angles) if angles[i] < angles[start]]
    order = [start]
    order.extend(positive[: group_size - 1])
    del positive[: group_size - 1]
    sides = [negative, positive]
    turn = 0
    while negative or positive:
        side = sides[turn % 2]
        order.extend(side[:group_size])
        del side[:group_size]
        turn += 1
    return [int(i) for i in order]


def bidirectional_order(angles_deg: np.ndarray, start_deg: float = 0.0) -> list[int]:
    """Indices in bidirectional order: from ``start_deg`` up to the maximum, then downwards."""
    angles = np.asarray(angles_deg, dtype=float)
    first = [int(i) for i in np.argsort(angles) if angles[i] >= start_deg - 1e-6]
    second = [int(i) for i in np.argsort(-angles) if angles[i] < start_deg - 1e-6]
    return first + second


def acquisition_angles_deg(scheme: str, min_deg: float, max_deg: float, step_deg: float,
                           group_size: int = 2, start_deg: float = 0.0) -> np.ndarray:
    """Nominal tilt angles in the order they are exposed (= the stack order we write)."""
    angles = tilt_angles_deg(min_deg, max_deg, step_deg)
    if scheme == "dose_symmetric":
        order = dose_symmetric_order(angles, group_size, start_deg)
    elif scheme == "bidirectional":
        order = bidirectional_order(angles, start_deg)
    else:
        raise ValueError(f"tilt_scheme: expected 'dose_symmetric' or 'bidirectional', got {scheme!r}")
    return angles[order]


def pre_exposures_e_a2(n_tilts: int, dose_per_tilt_e_a2: float) -> np.ndarray:
    """Dose received before each exposure, for tilts listed in acquisition order, e/Å²."""
    return np.arange(n_tilts, dtype=float) * float(dose_per_tilt_e_a2)
