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

import numpy as np
import scipy.fft

from tomoweave.algorithms.ctf_model import electron_wavelength_a
from tomoweave.algorithms.ctf_refinement import (
    _diagnostics,
    _fit_resolution,
    _prepare_points,
    _refine_2d,
    _score,
)
from tomoweave.algorithms.ctf_spectrum import (
    _BACKGROUND_DEGREE,
    _ENVELOPE_DEGREE,
    _alias_limit,
    _basis,
    _ctf_squared,
    _even,
    _frequency_grid,
    _Group,
    _lsq_fit,
    _radial_profiles,
    _Setup,
    _total_spread,
)
from tomoweave.algorithms.windows import cosine_taper

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
    window = cosine_taper((tile, tile), 0.1, min_width_px=2)
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


# --- models --------------------------------------------------------------------------------------




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


# Serial on purpose: it is called hundreds of times on ~1e5 points, where thread start-up costs
# more than it saves, and the engine already runs one tilt series per core.


# --- 3. fit resolution and diagnostics ---------------------------------------------------------


