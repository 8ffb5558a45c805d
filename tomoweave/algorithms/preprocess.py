"""Image clean-up before alignment: X-ray / hot-pixel eraser and the exposure (dose) filter.

The exposure filter follows Grant & Grigorieff (2015) eLife 4:e06980: a spatial frequency k
(1/Å) survives an accumulated exposure N (e/Å²) with amplitude exp(-N / (2 Ne(k))), where the
critical exposure is Ne(k) = 0.245 k^-1.665 + 2.81 e/Å² at 300 kV (scaled by 0.8 at 200 kV).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

_CRITICAL_A = 0.245
_CRITICAL_B = -1.665
_CRITICAL_C = 2.81


def critical_exposure_e_a2(frequency_inv_a: np.ndarray, voltage_kv: float = 300.0) -> np.ndarray:
    """Critical exposure Ne(k) in e/Å² at spatial frequency ``frequency_inv_a`` (1/Å).

    Measured at 300 kV; lower voltages damage faster (factor 0.8 at 200 kV, linear in between,
    as in Unblur/RELION).
    """
    k = np.maximum(np.asarray(frequency_inv_a, dtype=np.float64), 1e-6)
    scale = 1.0 if voltage_kv >= 300 else max(0.5, 0.8 + 0.2 * (voltage_kv - 200.0) / 100.0)
    return scale * (_CRITICAL_A * k**_CRITICAL_B + _CRITICAL_C)


def exposure_weights(
    shape_yx: tuple[int, int],
    pixel_size_a: float,
    exposure_e_a2: float,
    voltage_kv: float = 300.0,
) -> np.ndarray:
    """Amplitude weights exp(-N / 2Ne(k)) on the rfft grid of ``shape_yx``, float32.

    Parameters
    ----------
    shape_yx : (int, int)
        Image shape [y, x] in pixels.
    pixel_size_a : float
        Pixel size, Å.
    exposure_e_a2 : float
        Accumulated exposure N, e/Å².
    """
    if pixel_size_a <= 0:
        raise ValueError(f"pixel_size_a must be > 0, got {pixel_size_a}")
    if exposure_e_a2 < 0:
        raise ValueError(f"exposure_e_a2 must be >= 0, got {exposure_e_a2}")
    fy = np.fft.fftfreq(shape_yx[0], d=pixel_size_a)[:, None]
    fx = np.fft.rfftfreq(shape_yx[1], d=pixel_size_a)[None, :]
    k = np.sqrt(fx * fx + fy * fy)
    weights = np.exp(-exposure_e_a2 / (2.0 * critical_exposure_e_a2(k, voltage_kv)))
    weights[0, 0] = 1.0  # keep the mean
    return weights.astype(np.float32)


def dose_filter_image(
    image: np.ndarray,
    pixel_size_a: float,
    exposure_e_a2: float,
    voltage_kv: float = 300.0,
) -> np.ndarray:
    """Attenuate each spatial frequency of ``image`` [y, x] by its accumulated-exposure weight.

    ``exposure_e_a2`` is the dose the specimen had received when the image was taken (use the
    pre-exposure plus half the tilt's own dose for the mid-exposure value). Returns float32 [y, x].
    """
    image = _check_image(image)
    spectrum = scipy.fft.rfft2(image, workers=-1)
    spectrum *= exposure_weights(image.shape, pixel_size_a, exposure_e_a2, voltage_kv)
    return scipy.fft.irfft2(spectrum, s=image.shape, workers=-1).astype(np.float32)


def erase_xrays(
    image: np.ndarray,
    threshold_sd: float = 8.0,
    box_px: int = 3,
    grow_px: int = 1,
    both_signs: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace X-ray hits and hot pixels by the local median.

    A pixel is an outlier when it exceeds the median of its ``box_px`` neighbourhood by more than
    ``threshold_sd`` robust standard deviations of (image - local median). Outliers are grown by
    ``grow_px`` pixels only into neighbours that also stand out by half the threshold, so the halo
    of a bright X-ray goes too but ordinary pixels beside it stay untouched.

    Parameters
    ----------
    image : ndarray [y, x]
    threshold_sd : float
        Detection threshold in robust SDs of the residual to the local median.
    box_px : int
        Median box size, px (odd, >= 3).
    both_signs : bool
        Also erase dark outliers (dead pixels); X-rays are bright, so off by default.

    Returns
    -------
    cleaned : ndarray [y, x] float32
    mask : ndarray [y, x] bool, the pixels replaced
    """
    image = _check_image(image)
    if box_px < 3 or box_px % 2 == 0:
        raise ValueError(f"box_px must be odd and >= 3, got {box_px}")
    if threshold_sd <= 0:
        raise ValueError(f"threshold_sd must be > 0, got {threshold_sd}")
    local_median = ndimage.median_filter(image, size=box_px, mode="reflect")
    residual = image - local_median
    sd = _robust_sd(residual)
    if sd == 0:
        return image.copy(), np.zeros(image.shape, dtype=bool)
    score = residual / sd
    if both_signs:
        score = np.abs(score)
    mask = score > threshold_sd
    if grow_px > 0 and mask.any():
        grown = ndimage.binary_dilation(mask, iterations=grow_px)
        mask |= grown & (score > 0.5 * threshold_sd)
    cleaned = image.copy()
    if mask.any():
        # Medians taken with the outliers masked out, so a cluster does not leak into its fill.
        fill = _masked_median(image, mask, box_px + 2)
        cleaned[mask] = fill[mask]
    return cleaned, mask


def _masked_median(image: np.ndarray, mask: np.ndarray, box_px: int) -> np.ndarray:
    values = image.astype(np.float64)
    values[mask] = np.nan
    fill = np.empty(image.shape, dtype=np.float32)
    half = box_px // 2
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys, xs, strict=True):
        patch = values[max(0, y - half): y + half + 1, max(0, x - half): x + half + 1]
        finite = patch[np.isfinite(patch)]
        fill[y, x] = np.median(finite) if finite.size else np.nanmedian(values)
    return fill


def _robust_sd(values: np.ndarray) -> float:
    sample = values.ravel()
    if sample.size > 2_000_000:
        sample = sample[:: sample.size // 2_000_000]
    median = np.median(sample)
    return float(1.4826 * np.median(np.abs(sample - median)))


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image [y, x], got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    return image.astype(np.float32, copy=False)
