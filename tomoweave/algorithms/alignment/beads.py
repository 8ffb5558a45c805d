"""Gold-bead detection: disc-shaped, strong, size-matched features.

Each image is matched with the projection of a solid sphere of the bead's diameter (a disc
whose darkness is the chord length) inside a support of a little more than the bead, by a
normalised cross-correlation. At every local maximum of the matched filter (the amplitude map)
two numbers describe the feature: its *shape* (the correlation coefficient with the disc, 1 for
a perfect bead, lower for irregular or elongated density) and its *amplitude* (the fitted
contrast of the disc). Gold is far denser than protein and all beads of one batch have the same
size, so the beads are the population of well-shaped features of the strongest amplitude; it is
found from the strongest down and kept within a band around its median strength. Protein-like
blobs of similar size are weaker, irregular and change shape with the tilt, so they fall out
here and, when one passes in a single tilt, in tracking (a track must be found in many tilts).

Positions are refined to sub-pixel by an iterated, recentred centroid of the local darkness,
then by a least-squares fit of the projected sphere over a sloped background.
Light beads (inverted contrast) are handled by negating the image (``polarity``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

BEAD_POLARITIES = ("dark", "light", "auto")
# a bead correlates with the disc at >= 0.9 without noise, ~0.7 at noise 0.3 of its contrast;
# elongated or clustered density below 0.5
MIN_SHAPE = 0.5
# strength band (amplitude x shape) around the beads' median, as fractions of it
STRENGTH_BAND = (0.6, 1.7)


def bead_template(bead_diameter_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Projected solid sphere (darkness 1 at the centre) and its circular support.

    Parameters
    ----------
    bead_diameter_px : float
        Bead diameter, px.

    Returns
    -------
    template, support : arrays [y, x] of odd side; the support is the disc of radius
    ``r + max(2, r / 2)`` px, so it includes a ring of background around the bead.
    """
    if bead_diameter_px <= 1.0:
        raise ValueError(f"bead_diameter_px must be > 1 px, got {bead_diameter_px}")
    radius = 0.5 * bead_diameter_px
    outer = radius + max(2.0, 0.5 * radius)
    half = int(np.ceil(outer))
    axis = np.arange(-half, half + 1, dtype=float)
    xs, ys = np.meshgrid(axis, axis)
    chord = _disc(xs, ys, radius)
    support = (np.hypot(axis[:, None], axis[None, :]) <= outer).astype(float)
    return chord, support


def bead_match(image: np.ndarray, bead_diameter_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Shape (normalised correlation with the bead disc) and amplitude maps of dark beads.

    Parameters
    ----------
    image : array [y, x]
        One image, beads darker than the background.
    bead_diameter_px : float
        Bead diameter, px.

    Returns
    -------
    shape, amplitude : arrays [y, x] (float32). ``shape`` is in [-1, 1]; ``amplitude`` is the
    least-squares contrast of the disc over its support (1 for a bead of unit central darkness).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2D [y, x], got shape {image.shape}")
    template, support = bead_template(bead_diameter_px)
    count = support.sum()
    centred = (template - (template * support).sum() / count) * support
    norm2 = float((centred**2).sum())
    darkness = -(image - image.mean())
    numerator = signal.fftconvolve(darkness, centred[::-1, ::-1], mode="same")
    local_sum = signal.fftconvolve(darkness, support, mode="same")
    local_sq = signal.fftconvolve(darkness**2, support, mode="same")
    variance = np.clip(local_sq - local_sum**2 / count, 0.0, None)
    floor = 1e-12 * max(float(variance.max()), 1e-30)
    shape = numerator / np.sqrt(norm2 * np.maximum(variance, floor))
    return np.clip(shape, -1, 1).astype(np.float32), (numerator / norm2).astype(np.float32)


def _robust_sigma(values: np.ndarray) -> float:
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    return mad if mad > 0 else (float(values.std()) or 1.0)


def _candidates(image: np.ndarray, bead_diameter_px: float, threshold: float, border: float):
    """Local maxima of the amplitude: (x, y) indices, shape, amplitude, significance."""
    shape, amplitude = bead_match(image, bead_diameter_px)
    size = max(3, int(round(bead_diameter_px)) | 1)
    sigma = _robust_sigma(amplitude)
    significance = (amplitude - float(np.median(amplitude))) / sigma
    peaks = (amplitude == ndimage.maximum_filter(amplitude, size=size)) & (significance > threshold)
    ys, xs = np.nonzero(peaks)
    inside = ((xs >= border) & (xs < image.shape[1] - border)
              & (ys >= border) & (ys < image.shape[0] - border))
    ys, xs = ys[inside], xs[inside]
    best_shape = ndimage.maximum_filter(shape, size=3)[ys, xs]
    return np.column_stack([xs, ys]), best_shape, amplitude[ys, xs], significance[ys, xs]


def select_beads(shape: np.ndarray, amplitude: np.ndarray, *, min_shape: float = MIN_SHAPE,
                 band: tuple[float, float] = STRENGTH_BAND) -> np.ndarray:
    """Indices of the bead population among candidates, strongest first.

    Parameters
    ----------
    shape, amplitude : arrays (N,)
        Correlation with the bead disc and fitted contrast of each candidate.
    min_shape : float
        Weakest accepted correlation with the disc.
    band : (float, float)
        Accepted strength (amplitude × shape) as fractions of the beads' median strength; the
        median starts from the three strongest well-shaped candidates and is iterated.
    """
    strength = np.asarray(amplitude, float) * np.asarray(shape, float)
    shaped = np.nonzero((np.asarray(shape) >= min_shape) & (strength > 0))[0]
    if len(shaped) == 0:
        return shaped
    order = shaped[np.argsort(strength[shaped])[::-1]]
    reference = float(np.median(strength[order[:3]]))
    keep = order
    for _ in range(3):
        keep = order[(strength[order] >= band[0] * reference)
                     & (strength[order] <= band[1] * reference)]
        if len(keep) == 0:
            break
        reference = float(np.median(strength[keep]))
    return keep


def polarity_quality(image: np.ndarray, bead_diameter_px: float, threshold: float) -> float:
    """How bead-like the dark features of ``image`` are: the sum of shape² of the selected
    beads (more and better-shaped beads score higher)."""
    border = bead_diameter_px
    _, shape, amplitude, _ = _candidates(image, bead_diameter_px, threshold, border)
    chosen = select_beads(shape, amplitude)
    return float(np.sum(shape[chosen] ** 2))


def resolve_polarity(image: np.ndarray, bead_diameter_px: float, polarity: str,
                     threshold: float = 8.0) -> tuple[str, str]:
    """``polarity`` itself, or for "auto" the one whose beads look more like beads.

    Returns the polarity ("dark" or "light") and a line saying how it was chosen.
    """
    if polarity not in BEAD_POLARITIES:
        raise ValueError(f"bead_polarity must be one of {BEAD_POLARITIES}, got {polarity!r}")
    if polarity != "auto":
        return polarity, f"bead polarity {polarity} (as set)"
    dark = polarity_quality(image, bead_diameter_px, threshold)
    light = polarity_quality(-np.asarray(image, dtype=np.float32), bead_diameter_px, threshold)
    chosen = "dark" if dark >= light else "light"
    return chosen, (f"bead polarity {chosen} (auto: bead-likeness dark {dark:.1f}, "
                    f"light {light:.1f})")


def detect_beads(
    image: np.ndarray,
    bead_diameter_px: float,
    threshold: float = 8.0,
    max_beads: int | None = None,
    border_px: float | None = None,
    *,
    polarity: str = "dark",
) -> tuple[np.ndarray, np.ndarray]:
    """Find gold beads in one image: disc-shaped, size-matched, the strongest population.

    Parameters
    ----------
    image : array [y, x]
        One tilt image.
    bead_diameter_px : float
        Bead diameter in pixels of this image.
    threshold : float
        Minimum matched-filter amplitude in robust standard deviations (MAD) of the whole map.
    max_beads : int, optional
        Keep only the strongest this many.
    border_px : float, optional
        Ignore candidates closer than this to the edge (default: one bead diameter).
    polarity : {"dark", "light"}
        Beads darker (the usual bright-field contrast) or lighter than the background.

    Returns
    -------
    positions_px : array (N, 2)
        Sub-pixel bead centres (x, y) in pixels from the image centre (index N // 2).
    scores : array (N,)
        Their strengths (amplitude × shape), strongest first.
    """
    if polarity not in ("dark", "light"):
        raise ValueError(f"polarity must be dark or light here, got {polarity!r}")
    image = np.asarray(image, dtype=np.float32)
    if polarity == "light":
        image = -image
    border = bead_diameter_px if border_px is None else border_px
    corners, shape, amplitude, _ = _candidates(image, bead_diameter_px, threshold, border)
    chosen = select_beads(shape, amplitude)
    if max_beads is not None:
        chosen = chosen[:max_beads]
    scores = (amplitude * shape)[chosen]
    positions = refine_centres(image, corners[chosen].astype(float), bead_diameter_px)
    positions = fit_centres(image, positions, bead_diameter_px)
    centre = np.array([image.shape[1] // 2, image.shape[0] // 2], dtype=float)
    return positions.reshape(-1, 2) - centre, scores


def refine_centres(
    image: np.ndarray, positions_px: np.ndarray, bead_diameter_px: float, iterations: int = 4
) -> np.ndarray:
    """Sub-pixel bead centres by a recentred centroid of darkness in a soft circular window.

    Parameters
    ----------
    image : array [y, x]
    positions_px : array (N, 2)
        Starting centres (x, y) in pixel indices from the corner.
    bead_diameter_px : float

    Returns
    -------
    array (N, 2): refined centres, pixel indices from the corner (x, y). A centre whose window
    leaves the image keeps its start.
    """
    image = np.asarray(image, dtype=np.float32)
    radius = 0.5 * bead_diameter_px
    smooth = ndimage.gaussian_filter(image, max(0.5, 0.25 * radius))
    window_radius = radius + 2.0
    half = int(np.ceil(window_radius)) + 2
    refined = np.array(positions_px, dtype=float, copy=True)
    offsets = np.arange(-half, half + 1)
    for n, start in enumerate(refined):
        centre = start.copy()
        for _ in range(iterations):
            ix, iy = int(round(centre[0])), int(round(centre[1]))
            if ix - half < 0 or iy - half < 0 or ix + half >= image.shape[1] or (
                iy + half >= image.shape[0]
            ):
                break
            patch = smooth[iy - half : iy + half + 1, ix - half : ix + half + 1]
            gx = ix + offsets[None, :] - centre[0]
            gy = iy + offsets[:, None] - centre[1]
            distance = np.sqrt(gx**2 + gy**2)
            # soft edge so the window moves continuously with the centre (no pixel-phase bias)
            window = np.clip(window_radius + 0.5 - distance, 0.0, 1.0)
            ring = (distance > window_radius) & (distance <= window_radius + 2.0)
            background = float(np.median(patch[ring])) if ring.any() else float(patch.max())
            darkness = np.clip(background - patch, 0.0, None) * window
            total = darkness.sum()
            if total <= 0:
                break
            step = np.array([(darkness * gx).sum(), (darkness * gy).sum()]) / total
            centre = centre + step
            if np.abs(step).max() < 1e-3:
                break
        refined[n] = centre
    return refined


def _disc(dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Projected sphere (chord / radius) at pixel offsets ``dx, dy`` from its centre, 4×4
    supersampled."""
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    xs = dx[..., None, None] + sub[None, :]
    ys = dy[..., None, None] + sub[:, None]
    return np.sqrt(np.clip(radius**2 - xs**2 - ys**2, 0.0, None)).mean(axis=(-2, -1)) / radius


def fit_centres(
    image: np.ndarray, positions_px: np.ndarray, bead_diameter_px: float, iterations: int = 8
) -> np.ndarray:
    """Sub-pixel bead centres by fitting the projected sphere over a sloped background.

    Within a soft disc of radius ``r + max(2, r / 2)`` around the centre, the image is modelled
    as ``b0 + b1 dx + b2 dy - a * disc(dx, dy)``; the linear terms are solved for each centre
    (variable projection) and the centre minimises the residual (Gauss-Newton, all beads of the
    image at once). The sharp edge of the disc fixes the centre; density that overlaps the bead
    (a protein next to it, a thicker region) mostly goes into the sloped background instead of
    pulling the centre, as it does a centroid.

    Parameters
    ----------
    image : array [y, x]
        Beads darker than the background.
    positions_px : array (N, 2)
        Starting centres (x, y), pixel indices from the corner.
    bead_diameter_px : float
    iterations : int
        Gauss-Newton iterations.

    Returns
    -------
    array (N, 2): refined centres (pixel indices from the corner); a centre whose window leaves
    the image, or whose fit moves it by more than a radius, keeps its start.
    """
    image = np.asarray(image, dtype=np.float64)
    radius = 0.5 * bead_diameter_px
    outer = radius + max(2.0, 0.5 * radius)
    half = int(np.ceil(outer)) + 2
    starts = np.array(positions_px, dtype=float).reshape(-1, 2)
    refined = starts.copy()
    corner = np.round(starts).astype(int)
    inside = np.all((corner - half >= 0) & (corner + half < np.array(image.shape[::-1])), axis=1)
    if not inside.any():
        return refined
    offsets = np.arange(-half, half + 1)
    rows = corner[inside, 1][:, None, None] + offsets[None, :, None]
    cols = corner[inside, 0][:, None, None] + offsets[None, None, :]
    patches = image[rows, cols]  # (N, W, W)
    xs, ys = (a.astype(float) for a in np.broadcast_arrays(cols, rows))

    def residual(centres):
        dx = xs - centres[:, 0, None, None]
        dy = ys - centres[:, 1, None, None]
        weight = np.sqrt(np.clip(outer + 0.5 - np.hypot(dx, dy), 0.0, 1.0))
        design = np.stack([np.ones_like(dx), dx, dy, -_disc(dx, dy, radius)], axis=-1)
        design = (design * weight[..., None]).reshape(len(centres), -1, 4)
        target = (patches * weight).reshape(len(centres), -1)
        normal = np.einsum("nki,nkj->nij", design, design) + 1e-9 * np.eye(4)
        coefficients = np.linalg.solve(normal, np.einsum("nki,nk->ni", design, target)[..., None])[..., 0]
        return target - np.einsum("nki,ni->nk", design, coefficients)

    centres = starts[inside].copy()
    step_px = 1e-3
    for _ in range(iterations):
        r0 = residual(centres)
        jacobian = np.stack([(residual(centres + step_px * e) - r0) / step_px
                             for e in np.eye(2)], axis=-1)  # (N, K, 2)
        normal = np.einsum("nki,nkj->nij", jacobian, jacobian) + 1e-12 * np.eye(2)
        step = -np.linalg.solve(normal, np.einsum("nki,nk->ni", jacobian, r0)[..., None])[..., 0]
        length = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, 1.0 / np.maximum(length, 1e-12))  # at most 1 px a step
        centres += step
        if length.max() < 1e-4:
            break
    moved = np.linalg.norm(centres - starts[inside], axis=1) <= radius
    index = np.nonzero(inside)[0]
    refined[index[moved]] = centres[moved]
    return refined
