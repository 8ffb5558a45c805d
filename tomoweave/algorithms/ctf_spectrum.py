"""The model of a power spectrum used by CTF estimation: the fitting setup, tile groups, CTF²
with the blur of the defocus spread, and the smooth background/envelope bases (see
``ctf_estimation``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Degrees of the Legendre bases of the smooth background and Thon-ring envelope.
_BACKGROUND_DEGREE = 3
_ENVELOPE_DEGREE = 2


@dataclass
class _Group:
    """Tiles with similar defocus offsets: their mean power spectrum (rfft half-plane)."""

    spectrum: np.ndarray
    offset_a: float
    spread_a: float
    tiles: int


@dataclass
class _Setup:
    wavelength_a: float
    cs_a: float
    amplitude_phase: float
    pixel_size_a: float
    tile_px: int
    tile_spread_a: float


def _alias_limit(setup: _Setup, defocus_a: float) -> float:
    """Highest frequency (1/Å) where Thon rings are still >= 3 spectrum pixels apart."""
    box_a = setup.tile_px * setup.pixel_size_a
    return box_a / (6.0 * setup.wavelength_a * max(defocus_a, 1.0))


def _even(value: int) -> int:
    return int(value) - int(value) % 2


def _chi(k2, defocus_a, setup: _Setup, phase_deg: float):
    return (np.pi * setup.wavelength_a * defocus_a * k2
            - 0.5 * np.pi * setup.cs_a * setup.wavelength_a**3 * k2 * k2
            + setup.amplitude_phase + np.radians(phase_deg))


def _damping(k2, spread_a: float, setup: _Setup):
    """Contrast left of cos(2 chi) after averaging over a uniform defocus spread (Å)."""
    return np.sinc(setup.wavelength_a * k2 * spread_a)


def _ctf_squared(k2, defocus_a, setup: _Setup, phase_deg: float, spread_a: float):
    chi = _chi(k2, defocus_a, setup, phase_deg)
    return 0.5 - 0.5 * np.cos(2.0 * chi) * _damping(k2, spread_a, setup)


def _total_spread(group: _Group, setup: _Setup) -> float:
    # Sum of two uniform spreads is approximated by one uniform of the root-sum-square width.
    return float(np.hypot(setup.tile_spread_a, group.spread_a))


def _frequency_grid(setup: _Setup):
    tile = setup.tile_px
    fy = np.fft.fftfreq(tile, d=setup.pixel_size_a)[:, None]
    fx = np.fft.rfftfreq(tile, d=setup.pixel_size_a)[None, :]
    fy, fx = np.broadcast_arrays(fy, fx)
    # Detector artefacts and tile edges put power on the axes: leave them out of every fit.
    cross = (np.abs(fx) * tile * setup.pixel_size_a < 1.5) | (
        np.abs(fy) * tile * setup.pixel_size_a < 1.5)
    return fx, fy, cross


def _radial_profiles(group: _Group, setup: _Setup, k_lo: float, k_hi: float):
    """Whitened radial profile of one group: (k per bin, whitened mean, bin index per point)."""
    fx, fy, cross = _frequency_grid(setup)
    k = np.hypot(fx, fy)
    box_a = setup.tile_px * setup.pixel_size_a
    bins = np.round(k * box_a).astype(int)
    use = (~cross) & (k >= k_lo) & (k <= k_hi)
    first, last = int(np.ceil(k_lo * box_a)), int(np.floor(k_hi * box_a))
    counts = np.bincount(bins[use], minlength=last + 1)[first: last + 1]
    sums = np.bincount(bins[use], weights=group.spectrum[use], minlength=last + 1)[first: last + 1]
    valid = counts > 0
    k_bins = (np.arange(first, last + 1) / box_a)[valid]
    profile = sums[valid] / counts[valid]
    whitening = _smooth_log_fit(k_bins, profile)
    return k_bins, profile / whitening, whitening


def _smooth_log_fit(k_bins, profile, degree: int = 4):
    x = _scaled(k_bins, k_bins[0], k_bins[-1])
    coefficients = np.polynomial.legendre.legfit(x, np.log(np.maximum(profile, 1e-30)), degree)
    return np.exp(np.polynomial.legendre.legval(x, coefficients))


def _scaled(k, k_lo, k_hi):
    return 2.0 * (k - k_lo) / max(k_hi - k_lo, 1e-12) - 1.0


def _basis(k, k_lo, k_hi, degree):
    return np.polynomial.legendre.legvander(_scaled(k, k_lo, k_hi), degree)


def _lsq_fit(background_basis, envelope_basis, ctf2, values):
    design = np.hstack([background_basis, envelope_basis * ctf2[:, None]])
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coefficients
    return coefficients, float(residual @ residual)

