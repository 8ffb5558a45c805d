"""Template-matching picking from start to end: template preparation, search, peaks, refinement.

Glue over :mod:`tomoweave.algorithms.template_matching` so that a protocol (or a test) runs the
whole sequence with one call and the same choices, plus what decides which peaks are particles:
the automatic score threshold and the masking of gold beads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage, optimize, stats
from scipy.special import erfcinv

from tomoweave.algorithms import fourier, volumes
from tomoweave.algorithms import template_matching as tm
from tomoweave.algorithms import template_peaks as peaks_
from tomoweave.geometry import sampling

MAX_RESCALE_FACTOR = 8.0  # beyond this a template is most likely the wrong file or pixel size


def rescale_factor_checked(template_pixel_a: float, tomogram_pixel_a: float) -> float:
    """template / tomogram pixel-size ratio, or ValueError when it is absurd."""
    factor = template_pixel_a / tomogram_pixel_a
    if not 1 / MAX_RESCALE_FACTOR <= factor <= MAX_RESCALE_FACTOR:
        raise ValueError(
            f"template pixel size {template_pixel_a:g} Å vs tomogram {tomogram_pixel_a:g} Å: "
            f"rescaling by {factor:.3g} is outside 1/{MAX_RESCALE_FACTOR:g} … "
            f"{MAX_RESCALE_FACTOR:g}; check the template's pixel size")
    return factor


def whitening_profile(tomogram: np.ndarray,
                      tilt_range_deg: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Radial gain 1 / sqrt(power) that flattens the tomogram's spectrum in the measured wedge.

    Returns (frequencies in cycles/pixel, gain); apply it with :func:`fourier.radial_filter` to
    the tomogram and the template alike, which makes the correlation a matched filter for the
    tomogram's own (coloured) noise instead of one dominated by its strongest frequencies.
    """
    weight = (lambda shape: fourier.wedge_taper(shape, *tilt_range_deg)) if tilt_range_deg \
        else None
    frequencies, power = fourier.radial_power_spectrum(tomogram, weight=weight, clip_sigma=4.0)
    positive = power[1:][power[1:] > 0]
    floor = 1e-4 * float(np.median(positive)) if positive.size else 1.0
    gain = 1.0 / np.sqrt(np.maximum(power, floor))
    gain[0] = gain[1] if gain.size > 1 else 1.0
    return frequencies, (gain / gain.max()).astype(np.float32)


def prepare_search_template(template: np.ndarray, template_pixel_a: float, pixel_size_a: float,
                            diameter_a: float, contrast: str = "dark",
                            tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0),
                            lowpass_a: float | None = None,
                            ctf: dict | None = None, *,
                            whitening: tuple[np.ndarray, np.ndarray] | None = None
                            ) -> tm.PreparedTemplate:
    """Rescale, crop, mask and weight a template for a tomogram of ``pixel_size_a``.

    ``contrast``: how particles look in the tomogram ("dark" for unstained cryo-ET). With a CTF
    the (signed) CTF already turns the positive density dark, so no further sign flip is made.
    ``whitening``: the tomogram's :func:`whitening_profile`, applied to the template too.
    """
    rescale_factor_checked(template_pixel_a, pixel_size_a)
    volume = volumes.rescale_volume(np.asarray(template, dtype=np.float32), template_pixel_a,
                               pixel_size_a)
    box = max(8, 2 * int(np.ceil(0.6 * diameter_a / pixel_size_a)))
    volume = volumes.crop_or_pad(volume, box)
    if contrast == "dark" and ctf is None:
        volume = -volume
    weight = fourier.wedge_ctf_weight(box, pixel_size_a, tilt_range_deg, lowpass_a, ctf)
    if whitening is not None:
        weight = weight * fourier.radial_filter(weight.shape[:2] + (box,), *whitening)
    mask = volumes.spherical_mask(box, 0.5 * diameter_a / pixel_size_a, soft_px=2.0)
    band = pixel_size_a / lowpass_a if lowpass_a else None
    return tm.PreparedTemplate(volume, mask, weight, tilt_range_deg=tilt_range_deg,
                               band_limit=band)


@dataclass
class NoiseModel:
    """Gumbel fit of the peak scores, and the threshold it gives.

    ``location`` and ``scale`` of the Gumbel law of a noise peak (the largest score within an
    exclusion radius), fitted to the quartiles of all ``n_peaks`` peaks; ``threshold`` is the
    score that ``n_false`` of them are expected to exceed.
    """

    location: float
    scale: float
    n_peaks: int
    n_false: float
    threshold: float

    def expected_above(self, score: np.ndarray) -> np.ndarray:
        """How many of the peaks noise alone puts above ``score``."""
        z = (np.asarray(score, dtype=float) - self.location) / max(self.scale, 1e-12)
        return self.n_peaks * -np.expm1(-np.exp(-z))


@dataclass
class PickResult:
    """Picked peaks: voxel positions (x, y, z), rotations, scores, and how they were chosen."""

    positions_xyz_px: np.ndarray
    rotations: np.ndarray
    scores: np.ndarray
    threshold: float
    score_map: np.ndarray
    n_rotations: int
    messages: list[str] = field(default_factory=list)
    peak_scores: np.ndarray | None = None  # every candidate peak, best first
    noise: NoiseModel | None = None


def pick_with_template(tomogram: np.ndarray, pixel_size_a: float, template: tm.PreparedTemplate,
                       angular_step_deg: float, diameter_a: float, symmetry: str = "C1",
                       max_particles: int = 1000, threshold: float | None = None,
                       threshold_method: str = "auto", lowpass_a: float | None = None,
                       mask_gold: bool = True, refine: bool = True,
                       exclusion_radius_a: float | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       whitening: tuple[np.ndarray, np.ndarray] | None = None,
                       n_false: float = 1.0) -> PickResult:
    """Search all orientations, mask gold, choose the threshold, extract and refine peaks.

    Parameters
    ----------
    tomogram : array (Z, Y, X)
    pixel_size_a : float
        Voxel size, Å.
    template : PreparedTemplate
        From :func:`prepare_search_template` (with the same ``whitening``).
    angular_step_deg : float
        Spacing of the orientation grid, degrees.
    diameter_a : float
        Particle diameter, Å: exclusion between peaks (default) and margins.
    threshold : float, optional
        Score threshold; None: chosen by ``threshold_method`` (see :func:`auto_threshold`).
    exclusion_radius_a : float, optional
        Peaks closer than this to a better one are dropped (default: the particle radius).
    whitening : (frequencies, gain), optional
        :func:`whitening_profile` of the tomogram, applied to it as to the template.
    n_false : float
        Noise peaks expected above the automatic threshold.
    """
    rotations = sampling.angular_sampling(angular_step_deg, symmetry)
    tomogram_filter = _search_filter(pixel_size_a, lowpass_a, whitening)
    result = tm.match_template(tomogram, template, rotations, tomogram_filter, progress=progress)
    radius_px = 0.5 * diameter_a / pixel_size_a
    exclusion_px = (exclusion_radius_a or 0.5 * diameter_a) / pixel_size_a
    border_px = int(round(radius_px))
    messages = [f"searched {len(rotations)} orientations ({angular_step_deg:g}° step, "
                f"symmetry {symmetry}) over {tomogram.size} voxels"]
    filtered = _filtered(tomogram, template, tomogram_filter)
    if mask_gold:  # on the low-passed tomogram: whitening would lift the noise to gold's level
        smooth = _filtered(tomogram, template, _search_filter(pixel_size_a, lowpass_a, None))
        gold = high_contrast_mask(smooth, 100.0 / pixel_size_a, radius_px)
        if gold.any():
            result.scores[gold] = -1.0
            messages.append(f"masked {gold.mean():.1%} of the volume around high-contrast "
                            "blobs (gold)")
    # every peak that respects the exclusion radius: the candidates and the noise statistics
    all_zyx, all_values = peaks_.find_peaks(result.scores, exclusion_px, -1.0 + 1e-6,
                                            10**7, border_px)
    noise = fit_noise_peaks(all_values, n_false) if len(all_values) >= 20 else None
    if threshold is None:
        threshold = auto_threshold(result.scores, threshold_method, n_false,
                                   border_px=border_px, noise=noise)
        messages.append(f"score threshold {threshold:.4f} ({threshold_method}, from the score "
                        f"statistics of {len(all_values)} peaks)")
    keep = all_values >= threshold
    peaks_zyx, values = all_zyx[keep][:max_particles], all_values[keep][:max_particles]
    if keep.sum() > max_particles:
        messages.append(f"{int(keep.sum())} peaks above the threshold: kept the best "
                        f"{max_particles} (max_particles)")
    chosen = result.rotations[result.rotation_index[tuple(peaks_zyx.T)]] if len(peaks_zyx) \
        else np.zeros((0, 3, 3))
    if refine and len(peaks_zyx):
        refined = [peaks_.refine_orientation(peaks_.subvolume_at(filtered, p, template.box),
                                             template, r, angular_step_deg)[0]
                   for p, r in zip(peaks_zyx, chosen, strict=True)]
        chosen = np.asarray(refined)
    messages.append(f"{len(peaks_zyx)} particles above {threshold:.4f}")
    positions_zyx = np.array([peaks_.subvoxel_peak(result.scores, p) for p in peaks_zyx])
    return PickResult(positions_zyx[:, ::-1] if len(peaks_zyx) else np.zeros((0, 3)),
                      np.asarray(chosen).reshape(-1, 3, 3), values, float(threshold),
                      result.scores, len(rotations), messages, all_values, noise)


def _search_filter(pixel_size_a: float, lowpass_a: float | None,
                   whitening: tuple[np.ndarray, np.ndarray] | None) -> Callable | None:
    """The tomogram's filter of the search (low-pass × whitening), or None."""
    if not lowpass_a and whitening is None:
        return None

    def tomogram_filter(shape: tuple[int, ...]) -> np.ndarray:
        weight = fourier.lowpass_filter(shape, pixel_size_a, lowpass_a)
        if whitening is not None:
            weight *= fourier.radial_filter(shape, *whitening)
        return weight

    return tomogram_filter


def _filtered(volume: np.ndarray, template: tm.PreparedTemplate,
              tomogram_filter: Callable | None) -> np.ndarray:
    """The tomogram as the search saw it: its filter and the template's search band."""
    data = np.asarray(volume, dtype=np.float32)
    weight = template.search_band(data.shape)[:, None, :]
    if tomogram_filter is not None:
        weight = weight * tomogram_filter(data.shape)
    return scipy.fft.irfftn(scipy.fft.rfftn(data, workers=-1) * weight, s=data.shape,
                            workers=-1).astype(np.float32)


# ----------------------------------------------------------------------------- thresholds
_GUMBEL_QUARTILES = (np.log(-np.log(0.25)), np.log(-np.log(0.75)))  # −ln(−ln q) = (x − μ)/β


def fit_noise_peaks(peak_values: np.ndarray, n_false: float = 1.0) -> NoiseModel:
    """Gumbel law of the noise peaks from the quartiles of all peaks, and its threshold.

    A peak of noise is the largest of many correlated scores (voxels within an exclusion
    radius, all orientations): extreme-value statistics, a Gumbel law. Particles are few among
    the peaks, so the quartiles are those of noise; the fitted law's tail then tells how many
    noise peaks lie above any score. Its tail falls more slowly than the true one (finite
    maxima of Gaussians converge to it from below), so the threshold errs on the safe side.
    """
    values = np.asarray(peak_values, dtype=float)
    q25, q75 = np.quantile(values, [0.25, 0.75])
    scale = max(float(q75 - q25) / (_GUMBEL_QUARTILES[0] - _GUMBEL_QUARTILES[1]), 1e-9)
    location = float(q25 + scale * _GUMBEL_QUARTILES[0])
    probability = min(0.5, n_false / values.size)
    threshold = location - scale * np.log(-np.log1p(-probability))
    return NoiseModel(location, scale, int(values.size), float(n_false), float(threshold))


def auto_threshold(scores: np.ndarray, method: str = "auto", n_false: float = 1.0,
                   k_sigma: float = 5.0, border_px: int = 0,
                   noise: NoiseModel | None = None) -> float:
    """Score threshold from the statistics of the score map.

    ``auto``: the level that ``n_false`` noise peaks are expected to exceed, from the Gumbel
    law fitted to all peaks (:func:`fit_noise_peaks`; give ``noise`` when it is fitted already).
    ``extreme``: the voxel scores taken as Gaussian (robust median/MAD), the level that
    ``n_false`` voxels exceed. ``sigma``: robust mean + ``k_sigma`` × robust std of the voxels.
    ``otsu``: Otsu's split of the local maxima.
    """
    if method not in ("auto", "extreme", "sigma", "otsu"):
        raise ValueError(f"threshold method '{method}': expected auto, extreme, sigma or otsu")
    inner = scores[peaks_.inner_region(scores.shape, border_px)]
    values = inner[np.isfinite(inner) & (inner > -1.0)].ravel()
    if values.size == 0:
        return 1.0
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median)))
    if method == "auto":
        if noise is None:
            radius = max(3.0, border_px)
            _, peak_values = peaks_.find_peaks(scores, radius, -1.0 + 1e-6, 10**7, border_px)
            if peak_values.size < 20:
                return median + k_sigma * sigma
            noise = fit_noise_peaks(peak_values, n_false)
            values = peak_values
        else:
            _, values = peaks_.find_peaks(scores, max(3.0, border_px), noise.threshold, 10**7,
                                          border_px)
        return max(noise.threshold, split_populations(values[values >= noise.threshold],
                                                      cut=noise.threshold))
    if method == "sigma":
        return median + k_sigma * sigma
    if method == "extreme":
        return median + float(erfcinv(2.0 * n_false / values.size) * np.sqrt(2.0)) * sigma
    peaks = inner[(inner >= ndimage.maximum_filter(inner, size=5)) & (inner > median)]
    return _otsu(peaks) if peaks.size > 2 else median + k_sigma * sigma


def split_populations(values: np.ndarray, min_separation: float = 3.0, *,
                      cut: float | None = None) -> float:
    """Level between two clearly separate groups of peak scores, or -inf when there is one.

    Above the noise, other structures that resemble the template (of similar size and
    shape) score too, but lower than the template's own particles. A mixture of two Gaussians
    is fitted (EM) and kept when the Bayesian information criterion prefers it to one Gaussian
    and the groups are bimodal (Ashman's D = √2 |μ₁ − μ₂| / √(σ₁² + σ₂²) above
    ``min_separation``: 3, above the usual 2, since a few dozen peaks of one broad population
    fit two Gaussians by chance); the level is where the two weighted densities cross.

    ``cut``: the values are those above ``cut`` (the noise threshold). Both models are then
    compared as laws cut there (one Gaussian fitted by maximum likelihood as a truncated
    one): one population cut by the threshold is lopsided, and an uncut Gaussian fits it so
    badly that two Gaussians won, splitting off a chance clump of the best particles (a
    crowded scene lost four fifths of its particles so).
    """
    values = np.sort(np.asarray(values, dtype=float))
    n = values.size
    if n < 8:
        return -np.inf
    split = _otsu(values, bins=min(64, n))
    low, high = values[values < split], values[values >= split]
    if low.size < 2 or high.size < 2:
        return -np.inf
    weight = np.array([low.size, high.size], dtype=float) / n
    mean = np.array([low.mean(), high.mean()])
    floor = 1e-3 * (values[-1] - values[0] + 1e-12)
    std = np.maximum([low.std(), high.std()], floor)
    for _ in range(100):
        density = weight * np.exp(-0.5 * ((values[:, None] - mean) / std) ** 2) / std
        total = density.sum(axis=1, keepdims=True) + 1e-300
        resp = density / total
        counts = resp.sum(axis=0) + 1e-12
        weight, mean = counts / n, (resp * values[:, None]).sum(axis=0) / counts
        std = np.maximum(np.sqrt((resp * (values[:, None] - mean) ** 2).sum(axis=0) / counts),
                         floor)
    log_two = float(np.log(total).sum()) - n * 0.5 * np.log(2 * np.pi)
    log_one = _gaussian_log_likelihood(values, cut, floor)
    if cut is not None:  # the mixture's share above the cut
        log_two -= n * float(np.log(np.sum(weight * stats.norm.sf(cut, mean, std)) + 1e-300))
    bic_two, bic_one = -2 * log_two + 5 * np.log(n), -2 * log_one + 2 * np.log(n)
    ashman = np.sqrt(2) * abs(mean[1] - mean[0]) / np.sqrt((std**2).sum())
    upper = int(np.argmax(mean))
    if bic_two >= bic_one or ashman < min_separation or counts[upper] < 3:
        return -np.inf
    grid = np.linspace(mean.min(), mean.max(), 512)
    density = weight * np.exp(-0.5 * ((grid[:, None] - mean) / std) ** 2) / std
    favours_upper = density[:, upper] >= density[:, 1 - upper]
    return float(grid[int(np.argmax(favours_upper))])


def _gaussian_log_likelihood(values: np.ndarray, cut: float | None, floor: float) -> float:
    """Largest log-likelihood of one Gaussian (truncated below ``cut`` when given)."""
    std = max(values.std(), floor)
    plain = float(stats.norm.logpdf(values, values.mean(), std).sum())
    if cut is None:
        return plain

    def negative(p: np.ndarray) -> float:
        sigma = max(float(np.exp(p[1])), floor)
        return -float(stats.norm.logpdf(values, p[0], sigma).sum()
                      - values.size * stats.norm.logsf(cut, p[0], sigma))

    fit = optimize.minimize(negative, [values.mean(), np.log(std)], method="Nelder-Mead")
    return max(plain - values.size * float(stats.norm.logsf(cut, values.mean(), std)),
               -float(fit.fun))


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    histogram, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


# ----------------------------------------------------------------------------- gold beads
def high_contrast_mask(volume: np.ndarray, blob_diameter_px: float, dilation_px: float,
                       gap_ratio: float = 1.5, max_blobs: int = 200) -> np.ndarray:
    """Mask of outlier blobs much stronger than everything else (gold beads), dilated.

    Local extrema of ``|volume - median|`` (one per ``blob_diameter_px``) are sorted; when the
    strongest ones are separated from the rest by a jump of at least ``gap_ratio`` (gold is
    several times denser than protein, whatever the noise), the blobs above the jump are
    masked, from half their peak value outwards, and dilated by ``dilation_px``. Without such a
    jump the mask is empty, so a tomogram without gold loses nothing.
    """
    data = np.abs(volume - np.median(volume)).astype(np.float32)
    size = max(3, int(round(blob_diameter_px)) | 1)
    peaks = data[(data >= ndimage.maximum_filter(data, size=size)) & (data > 0)]
    peaks = np.sort(peaks)[::-1][:max_blobs]
    mask = np.zeros(volume.shape, dtype=bool)
    if peaks.size < 3:
        return mask
    ratios = peaks[:-1] / np.maximum(peaks[1:], 1e-12)
    # only jumps among the top blobs count; a gold-free tomogram decays smoothly
    limit = max(1, min(len(ratios), max_blobs // 4))
    jump = int(np.argmax(ratios[:limit]))
    if ratios[jump] < gap_ratio:
        return mask
    weakest_gold = peaks[jump]
    seeds = data >= weakest_gold
    grown = ndimage.binary_propagation(seeds, mask=data >= 0.5 * weakest_gold)
    if dilation_px >= 1:
        radius = int(np.ceil(dilation_px))
        grid = np.indices((2 * radius + 1,) * 3) - radius
        ball = (grid**2).sum(axis=0) <= dilation_px**2
        grown = ndimage.binary_dilation(grown, structure=ball)
    return grown
