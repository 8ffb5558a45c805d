"""2D refinement of a CTF fit over all spectrum points of all tile groups, its fit resolution
and diagnostics (see ``ctf_estimation``)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import optimize

from tomoweave.algorithms.ctf_spectrum import (
    _BACKGROUND_DEGREE,
    _ENVELOPE_DEGREE,
    _basis,
    _chi,
    _ctf_squared,
    _damping,
    _frequency_grid,
    _lsq_fit,
    _radial_profiles,
    _scaled,
    _Setup,
    _total_spread,
)


@dataclass
class _Points:
    """Spectrum points of all groups in the fit range, background removed, standardised."""

    fx: np.ndarray
    fy: np.ndarray
    k2: np.ndarray
    values: np.ndarray
    offset_a: np.ndarray
    spread_a: np.ndarray
    group: np.ndarray
    k_lo: float
    kernel: tuple | None = None


def _prepare_points(groups, setup, k_lo, k_hi, defocus_a, phase_deg) -> _Points:
    fx, fy, cross = _frequency_grid(setup)
    k = np.hypot(fx, fy)
    use = (~cross) & (k >= k_lo) & (k <= k_hi)
    box_a = setup.tile_px * setup.pixel_size_a
    k_points = k[use]
    bins = np.round(k_points * box_a).astype(int)
    parts = []
    for index, group in enumerate(groups):
        k_bins, profile, whitening = _radial_profiles(group, setup, k_lo, k_hi)
        spread = _total_spread(group, setup)
        ctf2 = _ctf_squared(k_bins**2, defocus_a + group.offset_a, setup, phase_deg, spread)
        background = _basis(k_bins, k_bins[0], k_bins[-1], _BACKGROUND_DEGREE)
        envelope = _basis(k_bins, k_bins[0], k_bins[-1], _ENVELOPE_DEGREE)
        coefficients, _ = _lsq_fit(background, envelope, ctf2, profile)
        values = group.spectrum[use] / np.interp(k_points, k_bins, whitening)
        values -= np.polynomial.legendre.legval(
            _scaled(k_points, k_bins[0], k_bins[-1]), coefficients[: _BACKGROUND_DEGREE + 1])
        # Local RMS per ring of pixels, smoothed over 5 rings: every resolution counts alike.
        power = np.bincount(bins, weights=values**2) / np.maximum(np.bincount(bins), 1)
        rms = np.sqrt(np.convolve(power, np.ones(5) / 5, mode="same"))
        values /= np.maximum(rms[bins], 1e-30)
        parts.append((values, np.full(values.size, group.offset_a), np.full(values.size, spread),
                      np.full(values.size, index)))
    values = np.concatenate([p[0] for p in parts])
    values = (values - values.mean()) / max(values.std(), 1e-30)
    repeat = len(groups)
    return _Points(
        fx=np.tile(fx[use], repeat), fy=np.tile(fy[use], repeat),
        k2=np.tile(k_points**2, repeat), values=values.astype(np.float64),
        offset_a=np.concatenate([p[1] for p in parts]),
        spread_a=np.concatenate([p[2] for p in parts]),
        group=np.concatenate([p[3] for p in parts]), k_lo=k_lo,
    )


@numba.njit(cache=True, fastmath=True)
def _model_correlation(cos2, sin2, phase_rate, base_phase, damping, values, mean_a, a1, a2,
                       phase_rad):  # pragma: no cover - numba
    """Correlation of ``values`` with 1/2 - 1/2 cos(2 chi) damping, chi linear in defocus."""
    n = cos2.size
    sum_m = 0.0
    sum_mm = 0.0
    sum_vm = 0.0
    for i in range(n):
        defocus = mean_a + a1 * cos2[i] + a2 * sin2[i]
        chi = phase_rate[i] * defocus + base_phase[i] + phase_rad
        model = 0.5 - 0.5 * np.cos(2.0 * chi) * damping[i]
        sum_m += model
        sum_mm += model * model
        sum_vm += values[i] * model
    variance = sum_mm / n - (sum_m / n) ** 2
    if variance <= 0.0:
        return 0.0
    return sum_vm / n / np.sqrt(variance)


def _kernel_arrays(points: _Points, setup: _Setup):
    """Per-point constants of the correlation kernel, computed once per fit."""
    if points.kernel is None:
        k2 = points.k2
        cos2 = (points.fx**2 - points.fy**2) / k2
        sin2 = 2.0 * points.fx * points.fy / k2
        phase_rate = np.pi * setup.wavelength_a * k2
        base_phase = (phase_rate * points.offset_a
                      - 0.5 * np.pi * setup.cs_a * setup.wavelength_a**3 * k2 * k2
                      + setup.amplitude_phase)
        damping = _damping(k2, points.spread_a, setup)
        points.kernel = tuple(np.ascontiguousarray(a, dtype=np.float64)
                              for a in (cos2, sin2, phase_rate, base_phase, damping))
    return points.kernel


def _score(points: _Points, setup: _Setup, params) -> float:
    mean_a, a1, a2, phase_deg = params
    return float(_model_correlation(*_kernel_arrays(points, setup), points.values, float(mean_a),
                                    float(a1), float(a2), float(np.radians(phase_deg))))


def _refine_2d(points, setup, defocus_a, phase_deg, fit_astigmatism, fit_phase):
    """Nelder-Mead on (mean defocus, astigmatism vector, phase) from a few astigmatism starts."""
    free = [True, fit_astigmatism, fit_astigmatism, fit_phase]
    steps = np.array([0.01 * defocus_a, 0.02 * defocus_a, 0.02 * defocus_a, 10.0])

    def full(x):
        params = np.array([defocus_a, 0.0, 0.0, phase_deg])
        params[np.array(free)] = x
        return params

    def cost(x):
        params = full(x)
        # Stay near the coarse solution: the 1D search already chose the right basin.
        if not 0.7 * defocus_a < params[0] < 1.3 * defocus_a or np.hypot(
                params[1], params[2]) > 0.4 * params[0]:
            return 1.0
        return -_score(points, setup, params)

    starts = [np.array([defocus_a, 0.0, 0.0, phase_deg])]
    if fit_astigmatism:
        h = 0.03 * defocus_a
        starts += [np.array([defocus_a, a1, a2, phase_deg])
                   for a1, a2 in ((h, 0.0), (0.0, h))]
    best = None
    mask = np.array(free)
    for start in starts:
        x0 = start[mask]
        simplex = np.vstack([x0] + [x0 + np.eye(len(x0))[i] * steps[mask][i]
                                    for i in range(len(x0))])
        result = optimize.minimize(cost, x0, method="Nelder-Mead",
                                   options={"initial_simplex": simplex, "xatol": 0.5,
                                            "fatol": 1e-7, "maxiter": 600})
        if best is None or result.fun < best.fun:
            best = result
    return full(best.x)


def _point_model(points: _Points, setup: _Setup, params, group_mask=None):
    mean_a, a1, a2, phase_deg = params
    sel = slice(None) if group_mask is None else group_mask
    fx, fy, k2 = points.fx[sel], points.fy[sel], points.k2[sel]
    defocus = (mean_a + points.offset_a[sel] + a1 * (fx * fx - fy * fy) / k2
               + a2 * 2.0 * fx * fy / k2)
    chi = _chi(k2, defocus, setup, phase_deg)
    model = 0.5 - 0.5 * np.cos(2 * chi) * _damping(k2, points.spread_a[sel], setup)
    return chi, model


def _fit_resolution(points, setup, params, k_hi):
    """Resolution (Å) of the last Thon ring whose data-model correlation stays significant.

    A ring counts as fitted when its correlation exceeds 8 / sqrt(points in the ring), i.e. about
    four standard errors with neighbouring spectrum points counted as four-fold correlated.
    """
    chi, model = _point_model(points, setup, params)
    ring = np.floor((chi - setup.amplitude_phase - np.radians(params[3])) / np.pi).astype(int)
    ring -= ring.min()
    count = np.bincount(ring).astype(float)
    sums = {name: np.bincount(ring, weights=w) for name, w in (
        ("v", points.values), ("m", model), ("vv", points.values**2), ("mm", model**2),
        ("vm", points.values * model), ("k", np.sqrt(points.k2)))}
    valid = count >= 50
    n = np.maximum(count, 1)
    cov = sums["vm"] / n - sums["v"] * sums["m"] / n**2
    var_v = sums["vv"] / n - (sums["v"] / n) ** 2
    var_m = sums["mm"] / n - (sums["m"] / n) ** 2
    corr = np.where(valid, cov / np.sqrt(np.maximum(var_v * var_m, 1e-30)), np.nan)
    threshold = 8.0 / np.sqrt(n)
    k_ring = sums["k"] / n
    resolution = 1.0 / points.k_lo
    rings = np.nonzero(valid)[0]
    for position, index in enumerate(rings):
        if corr[index] >= threshold[index]:
            resolution = 1.0 / k_ring[index]
        elif position + 1 < len(rings) and corr[rings[position + 1]] < threshold[rings[position + 1]]:
            break
    curve = np.stack([k_ring[valid], corr[valid]], axis=1)
    return max(resolution, 1.0 / k_hi), curve


def _diagnostics(points: _Points, setup: _Setup, params, groups) -> dict:
    """Centred 2D picture (data left, model right) of the group nearest the axis, 1D profiles."""
    nearest = int(np.argmin([abs(g.offset_a) - 1e-3 * g.tiles for g in groups]))
    mask = points.group == nearest
    chi, model = _point_model(points, setup, params, mask)
    fx, fy, cross = _frequency_grid(setup)
    k = np.hypot(fx, fy)
    use = (~cross) & (k >= points.k_lo) & (k ** 2 <= points.k2.max() * 1.0000001)
    tile = setup.tile_px
    data_half = np.zeros(fx.shape, dtype=np.float32)
    model_half = np.zeros(fx.shape, dtype=np.float32)
    data_half[use] = points.values[mask]
    model_half[use] = (model - model.mean()) / max(model.std(), 1e-12)
    centred = np.zeros((tile, tile), dtype=np.float32)
    ky = (np.arange(tile) - tile // 2) % tile
    for column in range(tile):
        kx = column - tile // 2
        if kx >= 0:
            centred[:, column] = model_half[ky, kx]
        else:
            centred[:, column] = data_half[(-ky) % tile, -kx]
    # Equiphase average: each point is moved to the frequency with the same phase at mean defocus.
    geometric = chi - setup.amplitude_phase - np.radians(params[3])
    a = 0.5 * np.pi * setup.cs_a * setup.wavelength_a**3
    b = np.pi * setup.wavelength_a * params[0]
    root = np.sqrt(np.maximum(b * b - 4 * a * geometric, 0.0))
    k_equivalent = np.sqrt(np.maximum((b - root) / (2 * a), 0.0))
    box_a = tile * setup.pixel_size_a
    bins = np.round(k_equivalent * box_a).astype(int)
    counts = np.bincount(bins)
    valid = counts > 0
    profile_data = np.bincount(bins, weights=points.values[mask])[valid] / counts[valid]
    profile_model = np.bincount(bins, weights=model)[valid] / counts[valid]
    return {
        "spectrum_2d": centred,
        "k_inv_a": np.nonzero(valid)[0] / box_a,
        "profile_data": profile_data,
        "profile_model": profile_model,
        "group_offsets_a": [g.offset_a for g in groups],
        "tile_px": tile,
    }

