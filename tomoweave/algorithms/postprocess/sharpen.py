"""Sharpening of a gold-standard average (Rosenthal & Henderson 2003, RELION postprocess).

The two half maps give the mask-corrected FSC (``averaging.fsc.gold_standard_fsc``); their
mean is weighted per shell by sqrt(2 FSC / (1 + FSC)) — in expectation this leaves the signal's
amplitude, the noise removed — and the logarithm of the mean amplitude per shell against 1/d²
(the Guinier plot) falls with slope −B/4 between about 10 Å and the resolution. The map is then
multiplied by exp(+B s² / 4) and low-passed at the resolution.

With a mask, the Guinier plot is that of the masked mean map: the mask-corrected FSC measures
the signal-to-noise ratio inside the mask, so only there does the FSC weighting leave the
signal's amplitude. (RELION 3.1 fits the unmasked sum, whose solvent noise flattens the high
shells and lowers B; on maps with little solvent noise the two agree.)

Sign convention: ``bfactor_a2`` is the B-factor of the map (positive for a map whose amplitudes
decay, |F(s)| ∝ exp(−B s² / 4), s = 1/d); RELION's rlnBfactorUsedForSharpening is −bfactor_a2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging.fsc import GoldStandardFsc, gold_standard_fsc

GUINIER_LOW_A = 10.0  # Rosenthal & Henderson: the Wilson regime starts near 10 Å
MIN_FIT_SHELLS = 3
WILSON_LIMIT_A = 8.0  # automatic B only for maps at this resolution or better


@dataclass
class GuinierFit:
    """Straight line ln|F| = intercept − (B / 4) s² fitted over ``range_a`` (low, high Å)."""

    bfactor_a2: float
    intercept: float
    correlation: float
    range_a: tuple[float, float]


@dataclass
class SharpenResult:
    """Everything post.sharpen reports.

    sharpened : (B, B, B) float32, unmasked mean of the halves, FSC-weighted, B-corrected and
        low-passed at the resolution; ``sharpened_masked`` is it times the mask (if any).
    guinier_s2_inv_a2 : (S,) 1/d² of shells 1 … box // 2; ``guinier_ln_*`` ln(mean |F|) of the
        plain mean map (masked, if a mask is given), the FSC-weighted one (the fitted curve)
        and the sharpened map at those shells (NaN where a shell holds no amplitude).
    """

    sharpened: np.ndarray
    sharpened_masked: np.ndarray | None
    fsc: GoldStandardFsc
    guinier: GuinierFit
    guinier_s2_inv_a2: np.ndarray
    guinier_ln_plain: np.ndarray
    guinier_ln_weighted: np.ndarray
    guinier_ln_sharpened: np.ndarray

    @property
    def resolution_a(self) -> float:
        return float(self.fsc.resolution_a)

    @property
    def bfactor_a2(self) -> float:
        return float(self.guinier.bfactor_a2)


def guinier_curve(spectrum: np.ndarray, box_px: int,
                  pixel_size_a: float) -> tuple[np.ndarray, np.ndarray]:
    """(1/d² in 1/Å², ln of the mean amplitude) for shells 1 … box // 2 of an rfftn spectrum.

    Parameters
    ----------
    spectrum : (B, B, B // 2 + 1) complex
        rfftn of a cubic map.
    box_px : int
    pixel_size_a : float
    """
    amplitude = fourier.shell_average(np.abs(spectrum), box_px)[1:]
    frequencies = fourier.shell_frequencies_inv_a(box_px, pixel_size_a)[1:]
    with np.errstate(divide="ignore"):
        ln_amplitude = np.where(amplitude > 0, np.log(np.maximum(amplitude, 1e-300)), np.nan)
    return frequencies**2, ln_amplitude


def automatic_guinier_range(resolution_a: float, box_px: int,
                            pixel_size_a: float) -> tuple[float, float] | None:
    """(low, high) resolution in Å of the Guinier fit: 10 Å (RELION's default) down to the
    resolution, widened to hold at least three shells; None for a map at worse than
    ``WILSON_LIMIT_A``: below ~10 Å a protein's spectrum is not a straight line on the Guinier
    plot (solvent contrast, secondary-structure peaks), so a fitted B would mean nothing —
    such maps are FSC-weighted and low-passed only, unless a B-factor is given.

    Parameters
    ----------
    resolution_a : float
        FSC resolution of the map.
    box_px, pixel_size_a : int, float
        The map's grid (the shells lie at box · pixel / s Å).
    """
    high = max(float(resolution_a), 2.0 * pixel_size_a)
    if high > WILSON_LIMIT_A:
        return None
    length_a = box_px * pixel_size_a
    first = max(1, int(np.floor(length_a / GUINIER_LOW_A)))
    last = int(np.floor(length_a / high + 1e-9))
    if last - first + 1 < MIN_FIT_SHELLS:
        first = max(1, last - MIN_FIT_SHELLS + 1)
        last = max(last, first + MIN_FIT_SHELLS - 1)
    last = min(last, box_px // 2)
    return length_a / first, length_a / last


def fit_guinier(s2_inv_a2: np.ndarray, ln_amplitude: np.ndarray,
                range_a: tuple[float, float]) -> GuinierFit:
    """Least-squares line through the Guinier plot between ``range_a`` = (low, high) Å.

    Parameters
    ----------
    s2_inv_a2, ln_amplitude : (S,)
        From :func:`guinier_curve`.
    range_a : (float, float)
        Lowest and highest resolution (Å) included; low > high.
    """
    low_a, high_a = float(range_a[0]), float(range_a[1])
    if not low_a > high_a > 0:
        raise ValueError(f"Guinier range {low_a:g}…{high_a:g} Å: expected low > high > 0")
    s2 = np.asarray(s2_inv_a2, dtype=float)
    values = np.asarray(ln_amplitude, dtype=float)
    inside = ((s2 >= 1.0 / low_a**2 * (1 - 1e-9)) & (s2 <= 1.0 / high_a**2 * (1 + 1e-9))
              & np.isfinite(values))
    if inside.sum() < 2:
        raise ValueError(f"Guinier range {low_a:g}…{high_a:g} Å holds {int(inside.sum())} "
                         f"shell(s) with amplitude; widen it")
    slope, intercept = np.polyfit(s2[inside], values[inside], 1)
    correlation = (float(np.corrcoef(s2[inside], values[inside])[0, 1]) if inside.sum() > 2
                   else -1.0)
    return GuinierFit(float(-4.0 * slope), float(intercept), correlation, (low_a, high_a))


def bfactor_filter(box_px: int, pixel_size_a: float, bfactor_a2: float) -> np.ndarray:
    """exp(−B s² / 4) on the rfftn grid of a cubic box (B < 0 sharpens), float32."""
    kz, ky, kx = fourier.rfft_frequencies((box_px,) * 3)
    s2 = (kz**2 + ky**2 + kx**2) / pixel_size_a**2
    return np.exp(-0.25 * bfactor_a2 * s2).astype(np.float32)


def sharpen_half_maps(half1: np.ndarray, half2: np.ndarray, pixel_size_a: float, *,
                      mask: np.ndarray | None = None, bfactor_a2: float | None = None,
                      guinier_range_a: tuple[float, float] | None = None,
                      fsc_weighted: bool = True, guinier_masked: bool = True,
                      edge_width_shells: float = 2.0, seed: int = 0) -> SharpenResult:
    """FSC, B-factor and the sharpened, low-passed map of two half maps.

    Parameters
    ----------
    half1, half2 : (B, B, B) float32
        Independent half maps, same grid.
    pixel_size_a : float
    mask : (B, B, B) float, optional
        Soft solvent mask (0 … 1) for the mask-corrected FSC; None gives the unmasked FSC.
    bfactor_a2 : float, optional
        The map's B-factor (Å², positive for decaying amplitudes) to correct; None fits it
        (or 0 — no correction — for a map too coarse for the automatic range).
    guinier_range_a : (low, high) Å, optional
        Range of the fit; None: :func:`automatic_guinier_range`.
    fsc_weighted : bool
        Weight the map by sqrt(2 FSC / (1 + FSC)) before the fit and the correction.
    guinier_masked : bool
        Fit the Guinier plot of the masked mean map (when a mask is given); False fits the
        unmasked one, as RELION 3.1 does.
    edge_width_shells : float
        Width of the raised-cosine edge of the final low-pass, in Fourier shells (RELION: 2).
    seed : int
        Seed of the phase randomisation.
    """
    box = half1.shape[0]
    fsc = gold_standard_fsc(half1, half2, pixel_size_a, mask, seed=seed)
    mean = 0.5 * (np.asarray(half1, np.float32) + np.asarray(half2, np.float32))
    spectrum = scipy.fft.rfftn(mean, workers=-1)
    weighting = (fourier.shell_filter(fourier.fsc_weighting(fsc.corrected), box)
                 if fsc_weighted else np.float32(1.0))
    masked_fit = mask is not None and guinier_masked
    fitted = scipy.fft.rfftn(mean * mask, workers=-1) if masked_fit else spectrum
    s2, ln_plain = guinier_curve(fitted, box, pixel_size_a)
    _, ln_weighted = guinier_curve(fitted * weighting, box, pixel_size_a)
    spectrum = spectrum * weighting
    span = guinier_range_a or automatic_guinier_range(fsc.resolution_a, box, pixel_size_a)
    if bfactor_a2 is None and span is not None:
        guinier = fit_guinier(s2, ln_weighted, span)
    else:
        guinier = GuinierFit(float(bfactor_a2 or 0.0), float("nan"), float("nan"),
                             tuple(span or (float("nan"), float("nan"))))
    spectrum = spectrum * bfactor_filter(box, pixel_size_a, -guinier.bfactor_a2)
    spectrum = spectrum * fourier.lowpass_filter((box,) * 3, pixel_size_a, fsc.resolution_a,
                                                 edge_width=edge_width_shells / box)
    sharpened = scipy.fft.irfftn(spectrum, s=(box,) * 3, workers=-1).astype(np.float32)
    masked = None if mask is None else (sharpened * mask).astype(np.float32)
    _, ln_sharpened = guinier_curve(
        scipy.fft.rfftn(masked, workers=-1) if masked_fit else spectrum, box, pixel_size_a)
    return SharpenResult(sharpened, masked, fsc, guinier, s2, ln_plain, ln_weighted,
                         ln_sharpened)
