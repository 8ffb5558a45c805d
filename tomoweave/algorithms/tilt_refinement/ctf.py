"""Per-tilt defocus and astigmatism, per-particle defocus offsets and per-tilt scales from the
particles' comparison with their references (RELION 4's tomographic CTF refinement).

For particle p in tilt t, with whitened patch X, reference slice S (no CTF), exposure envelope
d and CTF phase chi₀ at the current defocus, a defocus change δ(θ) (θ: direction of the
frequency; astigmatism makes it depend on θ) adds b = π λ δ(θ) f² to the phase, and the
log-likelihood of the tilt, maximised over its scale a_t > 0, is num² / (2 den) with

    num(b) = Σ_pq w d Re(X S̄) · (−sin(chi₀ + b)),   den(b) = Σ_pq w d² |S|² sin²(chi₀ + b).

b depends on the frequency only (not on the particle), so the sums over particles are taken
once per tilt (sin/cos expansions) and every candidate δ costs one pass over the band: a dense
search of the defocus, then a local search of the astigmatism. Per-particle offsets (a
height error) use the same expansion summed over tilts, with each tilt's scale fixed and a
Gaussian prior. Scales a_t measure how much signal each tilt really carries (exposure).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize

from tomoweave.algorithms.averaging.pseudo_subtomograms import TiltSeriesOptics
from tomoweave.algorithms.ctf_model import ctf_phase, electron_wavelength_a
from tomoweave.algorithms.fourier import tilt_transfers
from tomoweave.algorithms.tilt_refinement.measure import Comparison


@dataclass
class CtfRefinement:
    """Result of :func:`refine_ctf`.

    optics : the refined per-tilt CTF (defocus at the tilt axis).
    defocus_changes_a : (T,) change of the mean defocus of each tilt, Å.
    particle_defocus_a : (N,) each particle's defocus offset (beyond its height), Å.
    tilt_scales : (T,) each tilt's amplitude scale relative to the median tilt.
    determined : False when the compared band did not reach past the first CTF zero: then
        nothing was changed (the scales are still measured).
    """

    optics: TiltSeriesOptics
    defocus_changes_a: np.ndarray
    particle_defocus_a: np.ndarray
    tilt_scales: np.ndarray
    determined: bool = True


def _envelopes(comparison: Comparison, optics: TiltSeriesOptics) -> np.ndarray:
    """Exposure envelope d_t on the band (T, n): the transfer with a CTF of constant −1."""
    setup = comparison.setup
    count = len(optics.defocus_u_a)
    flat = tilt_transfers(setup.box_px, setup.pixel_size_a,
                          {"defocus_u_a": np.zeros(count), "amplitude_contrast": 1.0,
                           "spherical_aberration_mm": 0.0, "voltage_kv": optics.voltage_kv},
                          optics.exposure_e_a2)
    return -flat[:, setup.mask]


def _phases(comparison: Comparison, optics: TiltSeriesOptics, t: int,
            particle_defocus_a: np.ndarray) -> np.ndarray:
    """chi₀ (N, n) of every particle in tilt ``t``."""
    setup = comparison.setup
    heights = comparison.heights_a[:, t] + particle_defocus_a
    phase = 0.0 if optics.phase_shift_deg is None else float(optics.phase_shift_deg[t])
    return ctf_phase(setup.fx[None], setup.fy[None],
                     optics.defocus_u_a[t] + heights[:, None],
                     optics.defocus_v_a[t] + heights[:, None],
                     float(optics.astigmatism_angle_deg[t]), optics.voltage_kv,
                     optics.spherical_aberration_mm, optics.amplitude_contrast, phase)


def _terms(cross: np.ndarray, power: np.ndarray, chi: np.ndarray, axis: int) -> np.ndarray:
    """The five sums (5, n) over ``axis`` that num(b) and den(b) need."""
    return np.stack([np.sum(cross * np.sin(chi), axis), np.sum(cross * np.cos(chi), axis),
                     np.sum(power, axis), np.sum(power * np.cos(2 * chi), axis),
                     np.sum(power * np.sin(2 * chi), axis)])


def _num_den(terms: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """num, den for phase changes b (C, n) -> (C,), (C,)."""
    sa, ca, sb, cb2, sb2 = terms
    num = -np.sum(sa * np.cos(b) + ca * np.sin(b), axis=-1)
    den = 0.5 * np.sum(sb - cb2 * np.cos(2 * b) + sb2 * np.sin(2 * b), axis=-1)
    return num, den


def _log_likelihood(terms: np.ndarray, b: np.ndarray) -> np.ndarray:
    num, den = _num_den(terms, b)
    return np.where(num > 0, num**2 / (2 * np.maximum(den, 1e-30)), 0.0)


def _best_on_grid(values: np.ndarray, grid: np.ndarray) -> float:
    best = int(np.argmax(values))
    if 0 < best < len(grid) - 1:
        left, centre, right = values[best - 1:best + 2]
        curve = left - 2 * centre + right
        if curve < 0:
            return float(grid[best] + 0.5 * (left - right) / curve * (grid[1] - grid[0]))
    return float(grid[best])


def refine_ctf(comparison: Comparison, optics: TiltSeriesOptics, *,
               defocus_range_a: float = 4000.0, defocus_step_a: float = 25.0,
               astigmatism: bool = False, per_tilt_scale: bool = False,
               particle_defocus: bool = True, defocus_sigma_a: float = 1000.0,
               particle_sigma_a: float = 300.0, particle_range_a: float = 1000.0
               ) -> CtfRefinement:
    """Refine the CTF of every tilt (and each particle's defocus offset).

    Parameters
    ----------
    comparison : patches and reference slices at the (refined) geometry.
    optics : the current per-tilt CTF and exposure.
    defocus_range_a, defocus_step_a : the search of each tilt's defocus change, Å.
    astigmatism : also refine each tilt's astigmatism (magnitude and angle) locally.
    per_tilt_scale : each tilt's defocus with its own amplitude scale. Below the first CTF
        zero a scale and a defocus change look alike (−sin chi ≈ −chi ∝ defocus), so with
        references of low resolution one scale shared by all tilts (default, measured at the
        current defoci) is what keeps the defoci tied; per-tilt scales are reported either
        way. A band that does not reach 1.2 × the first CTF zero changes nothing
        (``determined`` False).
    defocus_sigma_a : prior width of each tilt's defocus change (the CTF estimate's error), Å:
        where the comparison cannot tell defoci apart (references that do not reach past
        the first CTF zero), the defocus stays where it was.
    particle_defocus : also refine a defocus offset per particle (prior σ
        ``particle_sigma_a``, searched within ± ``particle_range_a``), Å.
    """
    setup = comparison.setup
    wavelength = electron_wavelength_a(optics.voltage_kv)
    rate = np.pi * wavelength * setup.frequency**2  # b per Å of defocus change, (n,)
    angle = np.arctan2(setup.fy, setup.fx)
    envelopes = _envelopes(comparison, optics)
    count, n_tilts = comparison.heights_a.shape[:2]
    cross = (comparison.weights[None] * envelopes[None]
             * np.real(comparison.patches * np.conj(comparison.slices)))
    power = (comparison.weights[None] * envelopes[None] ** 2
             * np.abs(comparison.slices) ** 2)
    grid = np.arange(-defocus_range_a, defocus_range_a + 1e-6, defocus_step_a)
    offsets = np.zeros(count)
    terms = [_terms(cross[:, t], power[:, t], _phases(comparison, optics, t, offsets), 0)
             for t in range(n_tilts)]
    candidates = [_num_den(item, grid[:, None] * rate[None]) for item in terms]
    changes = np.zeros(n_tilts)
    scale = None
    if not per_tilt_scale:  # one scale, at the current defoci: the tilts' defoci stay tied
        nums, dens = zip(*[_num_den(item, np.zeros((1, rate.size))) for item in terms],
                         strict=True)
        scale = max(float(np.sum(nums) / max(np.sum(dens), 1e-30)), 1e-30)
    determined = _beyond_first_zero(setup.frequency.max(), optics, wavelength)
    for t, (num, den) in enumerate(candidates):
        if not determined:
            break
        values = (np.where(num > 0, num**2 / (2 * np.maximum(den, 1e-30)), 0.0)
                  if scale is None else scale * num - 0.5 * scale**2 * den)
        changes[t] = _best_on_grid(values - 0.5 * (grid / defocus_sigma_a) ** 2, grid)
    u, v = np.array(optics.defocus_u_a, float), np.array(optics.defocus_v_a, float)
    angles = np.array(optics.astigmatism_angle_deg, float)
    scales = np.zeros(n_tilts)
    for t in range(n_tilts):
        if astigmatism and determined:
            u[t], v[t], angles[t], changes[t] = _astigmatism(terms[t], rate, angle, changes[t],
                                                             u[t], v[t], angles[t], scale)
        else:
            u[t] += changes[t]
            v[t] += changes[t]
        num, den = _num_den(terms[t], (changes[t] * rate)[None])
        scales[t] = max(float(num[0] / max(den[0], 1e-30)), 0.0)
    refined = replace(optics, defocus_u_a=u, defocus_v_a=v, astigmatism_angle_deg=angles)
    if particle_defocus and determined:
        offsets = _particle_offsets(comparison, refined, cross, power, scales, rate,
                                    particle_sigma_a, particle_range_a, defocus_step_a)
    median = np.median(scales[scales > 0]) if np.any(scales > 0) else 1.0
    return CtfRefinement(refined, changes, offsets, scales / median, determined)


def _beyond_first_zero(frequency_inv_a: float, optics: TiltSeriesOptics,
                       wavelength_a: float) -> bool:
    """Whether the band reaches 1.2 × the first CTF zero of the series' mean defocus: below
    it the CTF is a smooth rise that a scale imitates, and defoci are not determined."""
    defocus = 0.5 * float(np.mean(optics.defocus_u_a) + np.mean(optics.defocus_v_a))
    first_zero = 1.0 / np.sqrt(max(wavelength_a * defocus, 1e-30))
    return frequency_inv_a >= 1.2 * first_zero


def _astigmatism(terms, rate, angle, delta, u, v, angle_deg, scale):
    """Local search of (mean change, cos 2θ and sin 2θ terms) around the defocus change."""
    def negative(x):
        b = rate * (x[0] + x[1] * np.cos(2 * angle) + x[2] * np.sin(2 * angle))
        if scale is None:
            return -float(_log_likelihood(terms, b[None])[0])
        num, den = _num_den(terms, b[None])
        return -float(scale * num[0] - 0.5 * scale**2 * den[0])

    result = optimize.minimize(negative, [delta, 0.0, 0.0], method="Nelder-Mead",
                               options={"xatol": 2.0, "fatol": 1e-6, "initial_simplex": [
                                   [delta, 0, 0], [delta + 100, 0, 0], [delta, 100, 0],
                                   [delta, 0, 100]]})
    mean_change, dc, ds = result.x
    half = 0.5 * (u - v)
    c = half * np.cos(2 * np.radians(angle_deg)) + dc
    s = half * np.sin(2 * np.radians(angle_deg)) + ds
    mean = 0.5 * (u + v) + mean_change
    new_half = np.hypot(c, s)
    return (mean + new_half, mean - new_half, float(np.degrees(0.5 * np.arctan2(s, c)) % 180),
            float(mean_change))


def _particle_offsets(comparison, optics, cross, power, scales, rate, sigma_a, range_a,
                      step_a) -> np.ndarray:
    """Per particle: the defocus offset maximising Σ_t (a_t num_t − a_t² den_t / 2) − prior."""
    count, n_tilts = comparison.heights_a.shape[:2]
    grid = np.arange(-range_a, range_a + 1e-6, step_a)
    b = grid[:, None] * rate[None]
    total = np.zeros((count, len(grid)))
    for t in range(n_tilts):
        chi = _phases(comparison, optics, t, np.zeros(count))
        for p in range(count):
            terms = _terms(cross[p, t, None] * scales[t], power[p, t, None] * scales[t] ** 2,
                           chi[p, None], 0)
            num, den = _num_den(terms, b)
            total[p] += num - 0.5 * den
    total -= 0.5 * (grid / sigma_a) ** 2
    return np.array([_best_on_grid(row, grid) for row in total])
