"""The CTF assistant's rules: which tilts of a series have an implausible CTF estimate.

A tilt is flagged when its defocus U or V deviates from the series mean by more than a relative
tolerance (ScipionTomo's CTF consensus uses 20 %), or when its fit resolution is worse than a limit.
The mean is taken over the tilts not flagged, iterated to a fixed point, so a few wild estimates
do not drag the mean towards themselves and hide each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CtfAssessment:
    """Per-tilt verdicts; ``flagged[i]`` with the reasons in ``reasons[i]``."""

    flagged: np.ndarray
    reasons: list[list[str]]
    mean_defocus_u_a: float
    mean_defocus_v_a: float
    overridden: list[int] = field(default_factory=list)


def assess_ctf(
    defocus_u_a: Sequence[float],
    defocus_v_a: Sequence[float],
    fit_resolution_a: Sequence[float | None] | None = None,
    tolerance: float = 0.2,
    max_fit_resolution_a: float | None = None,
    max_iterations: int = 20,
    *,
    reliable: Sequence[bool] | None = None,
) -> CtfAssessment:
    """Flag tilts whose defocus deviates from the series mean or whose fit is poor.

    Parameters
    ----------
    defocus_u_a, defocus_v_a : sequences of float, length T
        Per-tilt defocus estimates, Å.
    fit_resolution_a : sequence of float or None, length T, optional
        Per-tilt fit resolution, Å (None: unknown, never flagged for it).
    tolerance : float
        Largest relative deviation |D - mean| / mean accepted (0.2 = 20 %).
    max_fit_resolution_a : float, optional
        Flag tilts whose fit resolution is worse (larger) than this, Å.
    max_iterations : int
        Most re-computations of the mean of the unflagged tilts.
    reliable : sequence of bool, length T, optional
        False for tilts whose fit found no Thon rings (their defocus is a stand-in, e.g. the
        nominal one): flagged and left out of the mean when other tilts of the series have
        rings. When no tilt has any (a pixel size too coarse for Thon rings), no tilt is
        flagged for it: the series is no worse than its neighbours, and the caller warns once.
    """
    u = np.asarray(defocus_u_a, dtype=float)
    v = np.asarray(defocus_v_a, dtype=float)
    if u.shape != v.shape or u.ndim != 1 or u.size == 0:
        raise ValueError(f"defocus_u_a and defocus_v_a must be equal-length 1D sequences, got "
                         f"{u.shape} and {v.shape}")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    resolution = _resolutions(fit_resolution_a, u.size)
    poor = np.zeros(u.size, dtype=bool)
    if max_fit_resolution_a:
        poor = np.isfinite(resolution) & (resolution > max_fit_resolution_a)
    no_rings = np.zeros(u.size, dtype=bool) if reliable is None else ~np.asarray(reliable, bool)
    if no_rings.shape != u.shape:
        raise ValueError(f"reliable must have one entry per tilt ({u.size}), got {no_rings.size}")
    if no_rings.all():
        no_rings[:] = False
    poor |= no_rings
    flagged = poor.copy()
    for _ in range(max_iterations):
        keep = ~flagged if (~flagged).any() else np.ones(u.size, dtype=bool)
        mean_u, mean_v = u[keep].mean(), v[keep].mean()
        deviant = _deviation(u, mean_u) > tolerance
        deviant |= _deviation(v, mean_v) > tolerance
        updated = deviant | poor
        if np.array_equal(updated, flagged):
            break
        flagged = updated
    reasons = []
    for index in range(u.size):
        why = []
        for name, values, mean in (("U", u, mean_u), ("V", v, mean_v)):
            deviation = _deviation(values[index: index + 1], mean)[0]
            if deviation > tolerance:
                why.append(f"defocus {name} {values[index]:.0f} Å deviates {100 * deviation:.0f} % "
                           f"from the series mean {mean:.0f} Å")
        if no_rings[index]:
            why.append("no usable Thon rings (the defocus is not a fit)")
        elif poor[index]:
            why.append(f"fit resolution {resolution[index]:.1f} Å worse than "
                       f"{max_fit_resolution_a:.1f} Å")
        reasons.append(why)
    return CtfAssessment(flagged=flagged, reasons=reasons, mean_defocus_u_a=float(mean_u),
                         mean_defocus_v_a=float(mean_v))


def apply_overrides(
    assessment: CtfAssessment,
    tilt_deg: Sequence[float],
    keep: Sequence[float] = (),
    drop: Sequence[float] = (),
    by: str = "angle",
    angle_tolerance_deg: float = 0.5,
) -> CtfAssessment:
    """The user's word over the rules: ``keep`` tilts are unflagged, ``drop`` tilts flagged.

    ``by`` is "angle" (entries are tilt angles in degrees, matched within
    ``angle_tolerance_deg``) or "index" (0-based positions in the series).
    """
    tilt_deg = np.asarray(tilt_deg, dtype=float)
    flagged = assessment.flagged.copy()
    reasons = [list(r) for r in assessment.reasons]
    changed: list[int] = []
    for values, state, note in ((keep, False, "kept by the user"), (drop, True, "dropped by the user")):
        for index in resolve_tilts(values, tilt_deg, by, angle_tolerance_deg):
            flagged[index] = state
            reasons[index] = [] if not state else reasons[index] + [note]
            changed.append(index)
    return CtfAssessment(flagged, reasons, assessment.mean_defocus_u_a,
                         assessment.mean_defocus_v_a, sorted(set(changed)))


def resolve_tilts(values: Sequence[float], tilt_deg: np.ndarray, by: str = "angle",
                  angle_tolerance_deg: float = 0.5) -> list[int]:
    """Indices of the tilts named by angle or by index; unknown names raise ValueError."""
    if by not in ("angle", "index"):
        raise ValueError(f"tilts are named by 'angle' or 'index', not {by!r}")
    indices = []
    for value in values:
        if by == "index":
            if float(value) != int(value) or not 0 <= int(value) < len(tilt_deg):
                raise ValueError(f"tilt index {value} is not in 0..{len(tilt_deg) - 1}")
            indices.append(int(value))
            continue
        distance = np.abs(tilt_deg - float(value))
        nearest = int(np.argmin(distance))
        if distance[nearest] > angle_tolerance_deg:
            raise ValueError(f"no tilt at {value}° (within {angle_tolerance_deg}°); tilts are "
                             f"{', '.join(f'{t:g}' for t in tilt_deg)}")
        indices.append(nearest)
    return indices


def _deviation(values: np.ndarray, mean: float) -> np.ndarray:
    return np.abs(values - mean) / max(abs(mean), 1e-9)


def _resolutions(fit_resolution_a, count: int) -> np.ndarray:
    if fit_resolution_a is None:
        return np.full(count, np.nan)
    values = np.array([np.nan if r is None else float(r) for r in fit_resolution_a])
    if values.size != count:
        raise ValueError(f"fit_resolution_a has {values.size} values for {count} tilts")
    return values
