"""Gold-bead detection: dark discs found with a scale-matched Laplacian of Gaussian.

A bead of radius r is a dark disc; the scale-normalised Laplacian of Gaussian with
``sigma = r / sqrt(2)`` responds most strongly to it (positive for a dark blob). Candidates are
local maxima of the response above a robust threshold (in MAD units of the whole response), then
refined to sub-pixel by an iterated, recentred centroid of the local darkness.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bead_response(image: np.ndarray, bead_diameter_px: float) -> np.ndarray:
    """Normalised LoG response (robust z-score; dark discs of the given diameter are positive)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be 2D [y, x], got shape {image.shape}")
    if bead_diameter_px <= 1.0:
        raise ValueError(f"bead_diameter_px must be > 1 px, got {bead_diameter_px}")
    sigma = 0.5 * bead_diameter_px / np.sqrt(2.0)
    response = sigma**2 * ndimage.gaussian_laplace(image, sigma)
    median = float(np.median(response))
    mad = 1.4826 * float(np.median(np.abs(response - median)))
    if mad <= 0:
        mad = float(response.std()) or 1.0
    return ((response - median) / mad).astype(np.float32)


def detect_beads(
    image: np.ndarray,
    bead_diameter_px: float,
    threshold: float = 8.0,
    max_beads: int | None = None,
    border_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Find gold beads (dark discs) in one image.

    Parameters
    ----------
    image : array [y, x]
        One tilt image; beads darker than the background.
    bead_diameter_px : float
        Bead diameter in pixels of this image.
    threshold : float
        Minimum LoG response in robust standard deviations (MAD) of the whole response.
    max_beads : int, optional
        Keep only the strongest this many.
    border_px : float, optional
        Ignore candidates closer than this to the edge (default: one bead diameter).

    Returns
    -------
    positions_px : array (N, 2)
        Sub-pixel bead centres (x, y) in pixels from the image centre (index N // 2).
    scores : array (N,)
        Their LoG responses, strongest first.
    """
    response = bead_response(image, bead_diameter_px)
    size = max(3, int(round(bead_diameter_px)) | 1)
    peaks = (response == ndimage.maximum_filter(response, size=size)) & (response > threshold)
    border = bead_diameter_px if border_px is None else border_px
    ys, xs = np.nonzero(peaks)
    inside = (
        (xs >= border) & (xs < image.shape[1] - border)
        & (ys >= border) & (ys < image.shape[0] - border)
    )
    ys, xs = ys[inside], xs[inside]
    scores = response[ys, xs]
    order = np.argsort(scores)[::-1]
    if max_beads is not None:
        order = order[:max_beads]
    ys, xs, scores = ys[order], xs[order], scores[order]
    positions = refine_centres(image, np.column_stack([xs, ys]).astype(float), bead_diameter_px)
    centre = np.array([image.shape[1] // 2, image.shape[0] // 2], dtype=float)
    return positions - centre, scores


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
