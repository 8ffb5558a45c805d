"""CTF estimation of (tilted) micrographs from power spectra of tiles.

The image is Fourier-binned to a fitting pixel size whose Nyquist suits the fit range, cut into
overlapping tiles, and each tile's power spectrum is assigned the defocus offset of its centre:
a tile at signed distance d (Å) from the tilt axis, across it, sees defocus
``defocus + DEFOCUS_GRADIENT_SIGN * d * tan(tilt)``. Tiles with similar offsets are averaged into
groups. Per group the spectrum is whitened by a smooth fit of its log radial profile; then

1. coarse 1D search: for each defocus on a log grid over a wide range, the radial profiles are
   fitted by ``b(k) + e(k) * CTF²(k, defocus + offset)`` with b, e low-order polynomials (linear
   least squares), scored by the fraction of the background-only residual that the CTF term
   explains. This is insensitive to the background under the Thon rings and to a wrong nominal
   defocus (the nominal value only breaks near-ties);
2. 2D refinement of mean defocus, astigmatism (as a vector, so no angle degeneracy) and optionally
   the phase shift, maximising the correlation of the background-subtracted, locally normalised 2D
   spectra with CTF² (a numba kernel over all spectrum points of all groups);
3. fit resolution: the frequency where the ring-by-ring correlation of data and model drops.

When no defocus stands out of the coarse search (no usable Thon rings), the fit is marked
unreliable and, if a nominal defocus is given, that value is returned without astigmatism.

The blur of the rings by the defocus spread inside a tile and a group is part of the model.
Conventions follow ``ctf_model``: defocus positive for underfocus, U >= V, angle of U from X.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.fft
from scipy import optimize

from tomoweave.algorithms.ctf_model import electron_wavelength_a

# Sign of the defocus gradient across the tilt axis. In the projection model of tomoweave.geometry
# (P = Rz(z_rot) Ry(tilt)), a specimen-plane point whose image lies at distance d along the image
# of the tomogram X axis, (cos z_rot, sin z_rot), sits at height z' = -d tan(tilt); +z' points to
# the source and defocus grows with it (tomoweave.sim.imaging: defocus(point) = defocus + z'), so
# defocus = defocus_axis - d tan(tilt). Checked against the simulator in tests.
DEFOCUS_GRADIENT_SIGN = -1.0

# A fit is reliable when the best coarse score explains most of the spectrum's modulation
# (adjusted R² >= GOOD_COARSE_SCORE), or explains a fair part and stands out of the scores over
# the whole defocus range (robust z-score >= MIN_PROMINENCE). Spectra with Thon rings give
# R² 0.82-0.96 (z 4-7 at 1 µm, where the peak is broad; 12-400 above); white noise R² 0.1-0.2
# (z 2-9); the simulator's 10 Å/px "test" preset, without signal at ring frequencies, R²
# 0.5-0.7 (z 2-5). Measured on tests/test_ctf_estimation.py images and the simulator.
GOOD_COARSE_SCORE = 0.78
# Fewer spectrum pixels than this between the fit-range ends (tiny images) and 7 smooth
# parameters fit anything: such fits are never called reliable.
MIN_SPECTRUM_RINGS = 40
MIN_PROMINENCE = 8.0
MIN_COARSE_SCORE = 0.4


@dataclass
class CtfFit:
    """Result of :func:`estimate_ctf`. Lengths in Å, angles in degrees."""

    defocus_u_a: float
    defocus_v_a: float
    astigmatism_angle_deg: float
    phase_shift_deg: float
    fit_resolution_a: float
    score: float
    pixel_size_fit_a: float
    reliable: bool = True
    diagnostics: dict = field(default_factory=dict, repr=False)


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


def estimate_ctf(
    image: np.ndarray,
    pixel_size_a: float,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    tilt_deg: float = 0.0,
    z_rot_deg: float = 0.0,
    nominal_defocus_a: float | None = None,
    min_defocus_a: float = 3000.0,
    max_defocus_a: float = 80000.0,
    min_resolution_a: float = 30.0,
    max_resolution_a: float = 5.0,
    tile_px: int = 512,
    fit_astigmatism: bool = True,
    fit_phase_shift: bool = False,
) -> CtfFit:
    """Estimate defocus, astigmatism, phase shift and fit resolution of one image.

    Parameters
    ----------
    image : ndarray [y, x]
        The micrograph or tilt image (any size; 4k at sub-Å pixels is binned first).
    pixel_size_a : float
        Pixel size, Å.
    tilt_deg : float
        Tilt of the specimen, degrees (0 for a micrograph).
    z_rot_deg : float
        In-plane rotation of the projection model (the alignment's ``z_rot_deg``; the SerialEM
        tilt-axis angle when no alignment is known). The defocus changes along the image of the
        tomogram X axis, (cos z_rot, sin z_rot).
    nominal_defocus_a : float, optional
        The microscope's defocus setting; breaks near-ties of the coarse search.
    min_defocus_a, max_defocus_a : float
        Search range of the coarse search, Å.
    min_resolution_a, max_resolution_a : float
        Fit range, Å (low and high resolution end). The high end is kept below 0.95 Nyquist
        and below the frequency where Thon rings alias in a tile; the low end moves down to
        0.3 Nyquist when the pixel size is coarse.
    tile_px : int
        Tile size at the fitting pixel size, px.
    """
    _check_arguments(image, pixel_size_a, min_defocus_a, max_defocus_a, min_resolution_a,
                     max_resolution_a)
    binned, fit_pixel_a = _bin_to_fit(_clean_image(image), pixel_size_a, max_resolution_a)
    tile_px = _tile_size(binned.shape, tile_px)
    setup = _Setup(
        wavelength_a=electron_wavelength_a(voltage_kv),
        cs_a=spherical_aberration_mm * 1e7,
        amplitude_phase=float(np.arctan2(amplitude_contrast, np.sqrt(1 - amplitude_contrast**2))),
        pixel_size_a=fit_pixel_a,
        tile_px=tile_px,
        tile_spread_a=tile_px * fit_pixel_a * abs(np.tan(np.radians(tilt_deg))),
    )
    groups = _tile_groups(binned, setup, tilt_deg, z_rot_deg)
    nyquist = 0.5 / fit_pixel_a
    # Coarse pixels leave few rings between the fit-range ends: start lower then.
    k_lo = min(1.0 / min_resolution_a, 0.3 * nyquist)
    k_hi_user = min(1.0 / max_resolution_a, 0.95 * nyquist)
    defocus_a, phase_deg, coarse_score, prominence = _coarse_search(
        groups, setup, k_lo, k_hi_user, min_defocus_a,
                                          max_defocus_a, nominal_defocus_a, fit_phase_shift)
    rings_in_range = (k_hi_user - k_lo) * setup.tile_px * setup.pixel_size_a
    reliable = rings_in_range >= MIN_SPECTRUM_RINGS and (coarse_score >= GOOD_COARSE_SCORE or (
        prominence >= MIN_PROMINENCE and coarse_score >= MIN_COARSE_SCORE))
    if not reliable and nominal_defocus_a:
        # No defocus stands out of the search: the spectrum shows no usable Thon rings (too
        # coarse a pixel, too little signal). The nominal value is a better guess than noise.
        defocus_a = float(np.clip(nominal_defocus_a, min_defocus_a, max_defocus_a))
    max_offset = max(abs(g.offset_a) for g in groups)
    k_hi = min(k_hi_user, _alias_limit(setup, 1.1 * defocus_a + max_offset))
    k_hi = max(k_hi, min(k_hi_user, 2.0 * k_lo))
    points = _prepare_points(groups, setup, k_lo, k_hi, defocus_a, phase_deg)
    if reliable:
        params = _refine_2d(points, setup, defocus_a, phase_deg, fit_astigmatism, fit_phase_shift)
    else:
        params = np.array([defocus_a, 0.0, 0.0, phase_deg])
    mean_a, a1, a2, phase_deg = params
    half_difference = float(np.hypot(a1, a2))
    angle_deg = float(np.degrees(0.5 * np.arctan2(a2, a1))) % 180.0
    score = _score(points, setup, params)
    fit_resolution_a, ring_curve = _fit_resolution(points, setup, params, k_hi)
    diagnostics = _diagnostics(points, setup, params, groups)
    diagnostics["ring_correlation"] = ring_curve
    diagnostics["coarse_score"] = coarse_score
    diagnostics["coarse_prominence"] = prominence
    return CtfFit(
        defocus_u_a=float(mean_a + half_difference),
        defocus_v_a=float(mean_a - half_difference),
        astigmatism_angle_deg=angle_deg,
        phase_shift_deg=float(phase_deg % 180.0) if fit_phase_shift else 0.0,
        fit_resolution_a=float(fit_resolution_a),
        score=float(score),
        pixel_size_fit_a=fit_pixel_a,
        reliable=reliable,
        diagnostics=diagnostics,
    )


def local_defocus_offset_a(x_a, y_a, tilt_deg: float, z_rot_deg: float):
    """Defocus offset (Å) at image position (x_a, y_a) Å from the centre of a tilted image."""
    across = x_a * np.cos(np.radians(z_rot_deg)) + y_a * np.sin(np.radians(z_rot_deg))
    return DEFOCUS_GRADIENT_SIGN * across * np.tan(np.radians(tilt_deg))


# --- preparation --------------------------------------------------------------------------------

def _check_arguments(image, pixel_size_a, min_defocus_a, max_defocus_a, min_res_a, max_res_a):
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image [y, x], got shape {image.shape}")
    if min(image.shape) < 64:
        raise ValueError(f"image of {image.shape[1]}×{image.shape[0]} px is too small for a CTF fit")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if float(np.std(image)) == 0.0:
        raise ValueError(f"image is constant ({float(image.flat[0])} everywhere): nothing to fit")
    if pixel_size_a <= 0:
        raise ValueError(f"pixel_size_a must be > 0, got {pixel_size_a}")
    if not 0 < min_defocus_a < max_defocus_a:
        raise ValueError(f"need 0 < min_defocus_a < max_defocus_a, got {min_defocus_a}, "
                         f"{max_defocus_a}")
    if not max_res_a < min_res_a:
        raise ValueError(f"max_resolution_a ({max_res_a}) must be finer than min_resolution_a "
                         f"({min_res_a})")


def _clean_image(image: np.ndarray) -> np.ndarray:
    """Clip hot pixels and X-rays so they do not flood the spectrum with white noise."""
    image = np.asarray(image, dtype=np.float32)
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    median = float(np.median(sample))
    spread = float(1.4826 * np.median(np.abs(sample - median))) or float(np.std(sample))
    return np.clip(image, median - 8 * spread, median + 8 * spread) - median


def _bin_to_fit(image: np.ndarray, pixel_size_a: float, max_resolution_a: float):
    """Fourier-crop so that the fit's high-resolution end sits at ~0.83 of the new Nyquist."""
    target_a = max(pixel_size_a, max_resolution_a / 2.4)
    if target_a <= pixel_size_a * 1.05:
        return image, pixel_size_a
    ny, nx = image.shape
    new_y = _even(int(round(ny * pixel_size_a / target_a)))
    new_x = _even(int(round(nx * pixel_size_a / target_a)))
    spectrum = scipy.fft.rfft2(image, workers=-1)
    rows = np.concatenate([np.arange(new_y // 2), np.arange(ny - new_y // 2, ny)])
    cropped = spectrum[rows, : new_x // 2 + 1]
    binned = scipy.fft.irfft2(cropped, s=(new_y, new_x), workers=-1).astype(np.float32)
    return binned, pixel_size_a * nx / new_x


def _tile_size(shape, tile_px: int) -> int:
    """The requested tile size, but small enough that at least 3×3 overlapping tiles fit."""
    size = min(int(tile_px), min(shape) // 2)
    return max(64, _even(min(size, min(shape))))


def _tile_groups(image, setup: _Setup, tilt_deg: float, z_rot_deg: float) -> list[_Group]:
    """Mean tile power spectra grouped by the defocus offset of the tile centres."""
    tile = setup.tile_px
    ny, nx = image.shape
    step = tile // 2
    starts_y = _starts(ny, tile, step)
    starts_x = _starts(nx, tile, step)
    window = _edge_taper(tile)
    spectra, offsets = [], []
    for y0 in starts_y:
        batch = []
        for x0 in starts_x:
            piece = image[y0: y0 + tile, x0: x0 + tile]
            batch.append((piece - piece.mean()) * window)
            centre_x = (x0 + tile / 2 - nx / 2) * setup.pixel_size_a
            centre_y = (y0 + tile / 2 - ny / 2) * setup.pixel_size_a
            offsets.append(local_defocus_offset_a(centre_x, centre_y, tilt_deg, z_rot_deg))
        power = np.abs(scipy.fft.rfft2(np.array(batch), workers=-1)) ** 2
        spectra.extend(power.astype(np.float32))
    offsets = np.array(offsets, dtype=float)
    # Groups no wider than ~1/3 of a tile's own defocus spread (and never under 150 Å).
    width = max(150.0, setup.tile_spread_a / 3.0)
    labels = np.round((offsets - offsets.min()) / width).astype(int)
    groups = []
    for label in np.unique(labels):
        members = np.nonzero(labels == label)[0]
        groups.append(_Group(
            spectrum=_suppress_spikes(np.mean([spectra[i] for i in members], axis=0), setup),
            offset_a=float(offsets[members].mean()),
            spread_a=float(np.ptp(offsets[members])),
            tiles=len(members),
        ))
    return groups


def _suppress_spikes(spectrum: np.ndarray, setup: _Setup, factor: float = 8.0) -> np.ndarray:
    """Replace spectrum pixels above ``factor`` × the median of their ring by that median.

    Periodic detector patterns (read-out stripes, gain lines) put huge isolated peaks in the
    spectrum whose window side lobes would otherwise swamp the Thon rings of their ring.
    """
    fx, fy, _ = _frequency_grid(setup)
    rings = np.round(np.hypot(fx, fy) * setup.tile_px * setup.pixel_size_a).astype(int)
    order = np.argsort(rings, axis=None)
    sorted_rings = rings.ravel()[order]
    bounds = np.flatnonzero(np.diff(sorted_rings)) + 1
    medians = np.zeros(sorted_rings[-1] + 1)
    for ring_values, ring in zip(np.split(spectrum.ravel()[order], bounds),
                                 sorted_rings[np.r_[0, bounds]], strict=True):
        medians[ring] = np.median(ring_values)
    limit = factor * medians[rings]
    return np.where(spectrum > limit, medians[rings], spectrum).astype(np.float32)


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    count = int(np.ceil((size - tile) / step)) + 1
    return [int(round(v)) for v in np.linspace(0, size - tile, count)]


def _edge_taper(size: int, fraction: float = 0.1) -> np.ndarray:
    edge = max(2, int(size * fraction))
    profile = np.ones(size)
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(edge) + 0.5) / edge)
    profile[:edge] = rise
    profile[-edge:] = rise[::-1]
    return np.outer(profile, profile).astype(np.float32)


def _alias_limit(setup: _Setup, defocus_a: float) -> float:
    """Highest frequency (1/Å) where Thon rings are still >= 3 spectrum pixels apart."""
    box_a = setup.tile_px * setup.pixel_size_a
    return box_a / (6.0 * setup.wavelength_a * max(defocus_a, 1.0))


def _even(value: int) -> int:
    return int(value) - int(value) % 2


# --- models --------------------------------------------------------------------------------------

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


_BACKGROUND_DEGREE = 3
_ENVELOPE_DEGREE = 2


def _lsq_fit(background_basis, envelope_basis, ctf2, values):
    design = np.hstack([background_basis, envelope_basis * ctf2[:, None]])
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coefficients
    return coefficients, float(residual @ residual)


# --- 1. coarse search ---------------------------------------------------------------------------

def _coarse_search(groups, setup, k_lo, k_hi, min_defocus_a, max_defocus_a, nominal_a, fit_phase):
    """Best (defocus, phase) of the 1D model over a log grid; nominal defocus breaks near-ties.

    Each trial defocus is scored up to the frequency where its own rings would alias, so small
    defoci use the whole range and large ones are not judged on aliased rings.
    """
    prepared = []
    for group in groups:
        k_bins, profile, _ = _radial_profiles(group, setup, k_lo, k_hi)
        if len(k_bins) < 12:
            raise ValueError(
                f"fit range {1 / k_lo:.1f}-{1 / k_hi:.1f} Å holds only {len(k_bins)} spectrum "
                f"rings at tile size {setup.tile_px}; widen the range or use larger tiles")
        prepared.append((group, k_bins, profile))
    max_offset = max(abs(g.offset_a) for g in groups)
    cache: dict[tuple[int, int], tuple] = {}

    def fit_parts(index, count):
        key = (index, count)
        if key not in cache:
            group, k_bins, profile = prepared[index]
            k = k_bins[:count]
            background = _basis(k, k[0], k[-1], _BACKGROUND_DEGREE)
            envelope = _basis(k, k[0], k[-1], _ENVELOPE_DEGREE)
            residual = profile[:count] - background @ np.linalg.lstsq(
                background, profile[:count], rcond=None)[0]
            cache[key] = (k * k, profile[:count], background, envelope,
                          max(float(residual @ residual), 1e-30))
        return cache[key]

    n_background = _BACKGROUND_DEGREE + 1
    n_full = n_background + _ENVELOPE_DEGREE + 1

    def score(defocus_a, phase_deg):
        total = 0.0
        limit = _alias_limit(setup, defocus_a + max_offset)
        for index, (group, k_bins, _) in enumerate(prepared):
            count = int(np.searchsorted(k_bins, limit, side="right"))
            if count < max(20, 0.3 * len(k_bins)):
                return -1.0  # rings this dense alias in a tile: not measurable here
            k2, profile, background, envelope, rss_background = fit_parts(index, count)
            ctf2 = _ctf_squared(k2, defocus_a + group.offset_a, setup, phase_deg,
                                _total_spread(group, setup))
            _, rss = _lsq_fit(background, envelope, ctf2, profile)
            # Adjusted for the degrees of freedom, so short ranges do not win by overfitting.
            total += group.tiles * (1.0 - (rss / (count - n_full))
                                    / (rss_background / (count - n_background)))
        return total / sum(g.tiles for g in groups)

    grid = np.exp(np.arange(np.log(min_defocus_a), np.log(max_defocus_a), 0.01))
    phases = np.arange(0.0, 180.0, 15.0) if fit_phase else np.array([0.0])
    table = np.array([[score(d, p) for d in grid] for p in phases])
    best_phase_row = int(np.argmax(table.max(axis=1)))
    row = table[best_phase_row]
    best = int(np.argmax(row))
    if nominal_a:
        peaks = [i for i in range(len(row))
                 if row[i] >= 0.9 * row[best] and row[i] >= row[max(i - 1, 0)]
                 and row[i] >= row[min(i + 1, len(row) - 1)]]
        best = min(peaks, key=lambda i: abs(np.log(grid[i] / nominal_a)))
    defocus_a, phase_deg = float(grid[best]), float(phases[best_phase_row])
    fine = defocus_a * np.exp(np.linspace(-0.015, 0.015, 31))
    fine_phases = phase_deg + np.arange(-10.0, 10.1, 2.0) if fit_phase else np.array([phase_deg])
    fine_table = np.array([[score(d, p) for d in fine] for p in fine_phases])
    p_index, d_index = np.unravel_index(int(np.argmax(fine_table)), fine_table.shape)
    valid = row[row > -1.0]
    spread = 1.4826 * np.median(np.abs(valid - np.median(valid))) if valid.size else 0.0
    prominence = float((fine_table.max() - np.median(valid)) / max(spread, 1e-9))
    return float(fine[d_index]), float(fine_phases[p_index]), float(fine_table.max()), prominence


# --- 2. 2D refinement ---------------------------------------------------------------------------

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


# Serial on purpose: it is called hundreds of times on ~1e5 points, where thread start-up costs
# more than it saves, and the engine already runs one tilt series per core.
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


# --- 3. fit resolution and diagnostics ---------------------------------------------------------

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
