"""Fourier binning (cropping the spectrum), which downsamples without aliasing."""

from __future__ import annotations

import numpy as np
import scipy.fft


def fourier_bin_image(image: np.ndarray, binning: float) -> np.ndarray:
    """Downsample a 2D image by ``binning`` (≥ 1) by cropping its Fourier transform.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Image in MRC order.
    binning : float
        Factor ≥ 1; the output has shape (round(ny / binning), round(nx / binning)).

    Returns
    -------
    ndarray, float32, the binned image with the same mean value.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    if binning < 1:
        raise ValueError(f"binning must be ≥ 1, got {binning}")
    if binning == 1:
        return image.copy()
    out_shape = tuple(max(1, int(round(n / binning))) for n in image.shape)
    spectrum = scipy.fft.fftshift(scipy.fft.fft2(image, workers=-1))
    cropped = _crop_centre(spectrum, out_shape)
    binned = scipy.fft.ifft2(scipy.fft.ifftshift(cropped), workers=-1).real
    scale = (out_shape[0] * out_shape[1]) / (image.shape[0] * image.shape[1])
    return (binned * scale).astype(np.float32)


def _crop_centre(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    slices = []
    for size, new in zip(array.shape, shape, strict=True):
        start = size // 2 - new // 2
        slices.append(slice(start, start + new))
    return array[tuple(slices)]
