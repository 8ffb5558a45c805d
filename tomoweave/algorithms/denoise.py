"""Tomogram denoising: edge-preserving filters and a small Noise2Noise model.

- :func:`anisotropic_diffusion`: Perona-Malik diffusion in 3D; the edge threshold is a multiple
  of the noise level, estimated robustly from the data.
- :func:`bilateral_filter`: 3D bilateral filter (Gaussian in space and in intensity).
- :class:`FilterBankN2N`: a locally adaptive learned filter bank trained with the Noise2Noise
  objective on even/odd tomograms (Lehtinen et al. 2018; Buchholz et al. 2019 for cryo-ET). Each
  voxel is described by responses of a fixed bank of Gaussian-derivative filters at a few scales;
  voxels are hashed into bins by local structure (gradient strength and curvature sign, RAISR's
  idea, Romano et al. 2017), and per bin a linear map from the responses to the other half is
  fitted by ridge least squares. Because the two halves have independent noise, the best
  predictor of the odd half from the even half is the best estimate of the signal. It is
  piecewise linear (hence edge-aware), trains in seconds on two cores with no deep-learning
  framework, and has no iterations to tune.

Volumes are float32 [z, y, x]; lengths in voxels inside this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import ndimage


def robust_noise_sd(volume: np.ndarray) -> float:
    """Noise standard deviation from the median absolute Laplacian-like residual (MAD)."""
    volume = np.asarray(volume, dtype=np.float32)
    residual = volume - ndimage.uniform_filter(volume, size=3)
    sample = residual.ravel()[:: max(1, residual.size // 2_000_000)]
    mad = np.median(np.abs(sample - np.median(sample)))
    # residual of a 3x3x3 box mean has variance (1 - 1/27) sigma^2 for white noise
    return float(1.4826 * mad / math.sqrt(1 - 1 / 27))


# ----------------------------------------------------------------------------- Perona-Malik
def anisotropic_diffusion(volume: np.ndarray, iterations: int = 10, kappa: float = 1.5,
                          step: float = 0.15) -> np.ndarray:
    """Perona-Malik diffusion: smooths within regions and stops at edges.

    Parameters
    ----------
    volume : array (nz, ny, nx)
    iterations : int
        Number of explicit diffusion steps.
    kappa : float
        Edge threshold as a multiple of the estimated noise SD: differences well above it
        are kept (conductance exp(-(d / (kappa sd))^2)).
    step : float
        Time step, at most 1/6 for stability in 3D.
    """
    volume = _check_volume(volume)
    if not 0 < step <= 1 / 6:
        raise ValueError(f"step must be in (0, 1/6], got {step}")
    if iterations < 0 or kappa <= 0:
        raise ValueError(f"iterations ({iterations}) must be >= 0 and kappa ({kappa}) > 0")
    threshold = kappa * max(robust_noise_sd(volume), 1e-12)
    current = volume.copy()
    scratch = np.empty_like(current)
    for _ in range(iterations):
        _diffusion_step(current, scratch, np.float32(1.0 / threshold**2), np.float32(step))
        current, scratch = scratch, current
    return current


@numba.njit(parallel=True, fastmath=True, cache=True)
def _diffusion_step(source, target, inverse_threshold2, step):  # pragma: no cover - numba
    nz, ny, nx = source.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                centre = source[z, y, x]
                flux = np.float32(0.0)
                for dz, dy, dx in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1),
                                   (0, 0, 1)):
                    zz = min(max(z + dz, 0), nz - 1)
                    yy = min(max(y + dy, 0), ny - 1)
                    xx = min(max(x + dx, 0), nx - 1)
                    difference = source[zz, yy, xx] - centre
                    flux += difference * math.exp(-difference * difference * inverse_threshold2)
                target[z, y, x] = centre + step * flux


# ----------------------------------------------------------------------------- bilateral
def bilateral_filter(volume: np.ndarray, sigma_space_px: float = 1.5,
                     sigma_range: float = 2.0) -> np.ndarray:
    """3D bilateral filter.

    Parameters
    ----------
    sigma_space_px : float
        Spatial Gaussian SD, voxels (window radius 2 SD).
    sigma_range : float
        Intensity Gaussian SD as a multiple of the estimated noise SD.
    """
    volume = _check_volume(volume)
    if sigma_space_px <= 0 or sigma_range <= 0:
        raise ValueError("sigma_space_px and sigma_range must be > 0")
    range_sd = sigma_range * max(robust_noise_sd(volume), 1e-12)
    radius = max(1, int(math.ceil(2 * sigma_space_px)))
    out = np.empty_like(volume)
    _bilateral(volume, out, radius, np.float32(-0.5 / sigma_space_px**2),
               np.float32(-0.5 / range_sd**2))
    return out


@numba.njit(parallel=True, fastmath=True, cache=True)
def _bilateral(source, out, radius, space_factor, range_factor):  # pragma: no cover - numba
    nz, ny, nx = source.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                centre = source[z, y, x]
                total = np.float32(0.0)
                weight_sum = np.float32(0.0)
                for zz in range(max(0, z - radius), min(nz, z + radius + 1)):
                    for yy in range(max(0, y - radius), min(ny, y + radius + 1)):
                        d2 = (zz - z) ** 2 + (yy - y) ** 2
                        for xx in range(max(0, x - radius), min(nx, x + radius + 1)):
                            value = source[zz, yy, xx]
                            difference = value - centre
                            weight = math.exp(space_factor * (d2 + (xx - x) ** 2)
                                              + range_factor * difference * difference)
                            total += weight * value
                            weight_sum += weight
                out[z, y, x] = total / weight_sum


# ----------------------------------------------------------------------------- Noise2Noise
@dataclass
class FilterBankN2N:
    """Locally adaptive learned filter bank, trained Noise2Noise-style (see module docstring).

    Attributes
    ----------
    scales_px : Gaussian scales of the filter bank, voxels.
    n_strength_bins : bins of local gradient strength (quantiles of the training data).
    ridge : relative ridge regularisation of the least-squares fits.
    """

    scales_px: tuple[float, ...] = (0.8, 1.6, 3.2)
    n_strength_bins: int = 4
    ridge: float = 1e-3
    max_samples: int = 200_000
    max_training_voxels: int = 4_000_000
    chunk_slices: int = 16
    bin_edges: list[float] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)
    normalisation: tuple[float, float] = (0.0, 1.0)

    # features ---------------------------------------------------------------------------
    def features(self, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter-bank responses (F, nz, ny, nx) and the bin index of every voxel."""
        mean, sd = self.normalisation
        x = (np.asarray(volume, dtype=np.float32) - mean) / sd
        responses = [np.ones_like(x), x]
        gradient_strength = None
        laplacian_sign = None
        for scale in self.scales_px:
            smooth = ndimage.gaussian_filter(x, scale)
            gradients = np.gradient(smooth)
            second = [np.gradient(g, axis=a) for a, g in enumerate(gradients)]
            responses += [smooth, *gradients, *second]
            if gradient_strength is None:  # structure at the finest scale drives the hashing
                gradient_strength = np.sqrt(sum(g * g for g in gradients))
                laplacian_sign = (sum(second) > 0).astype(np.int32)
        stack = np.stack(responses).astype(np.float32)
        return stack, (gradient_strength, laplacian_sign)

    def _bins(self, structure) -> np.ndarray:
        strength, sign = structure
        strength_bin = np.searchsorted(np.asarray(self.bin_edges), strength)
        return (strength_bin * 2 + sign).astype(np.int32)

    # training ---------------------------------------------------------------------------
    def fit(self, even: np.ndarray, odd: np.ndarray, seed: int = 0) -> FilterBankN2N:
        """Fit on a pair of half tomograms (both directions: even -> odd and odd -> even)."""
        even, odd = _check_volume(even), _check_volume(odd)
        if even.shape != odd.shape:
            raise ValueError(f"even {even.shape} and odd {odd.shape} shapes differ")
        crop = _central_crop(even.shape, self.max_training_voxels)
        even, odd = even[crop], odd[crop]
        both = np.concatenate([even.ravel()[::7], odd.ravel()[::7]])
        self.normalisation = (float(both.mean()), float(max(both.std(), 1e-12)))
        rng = np.random.default_rng(seed)
        n_bins = 2 * self.n_strength_bins
        gram = np.zeros((n_bins, 0, 0))
        rhs = None
        for source, target in ((even, odd), (odd, even)):
            features, structure = self.features(source)
            if not self.bin_edges:
                quantiles = np.linspace(0, 1, self.n_strength_bins + 1)[1:-1]
                self.bin_edges = np.quantile(structure[0].ravel()[::11], quantiles).tolist()
            bins = self._bins(structure).ravel()
            flat = features.reshape(len(features), -1)
            # a strided subset with a random phase: contiguous reads, no sampling bias in space
            stride = max(1, flat.shape[1] // self.max_samples)
            pick = slice(int(rng.integers(stride)), None, stride)
            a = np.ascontiguousarray(flat[:, pick].T)
            y = ((target.ravel()[pick] - self.normalisation[0]) / self.normalisation[1])
            if rhs is None:
                gram = np.zeros((n_bins, a.shape[1], a.shape[1]))
                rhs = np.zeros((n_bins, a.shape[1]))
            _accumulate_normal_equations(a, y.astype(np.float32), bins[pick], gram, rhs)
        self.weights = [self._solve(gram[i], rhs[i]).tolist() for i in range(n_bins)]
        return self

    def _solve(self, gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        scale = max(float(np.trace(gram)) / len(gram), 1e-12)
        regularised = gram + self.ridge * scale * np.eye(len(gram))
        return np.linalg.solve(regularised, rhs)

    # inference --------------------------------------------------------------------------
    def predict(self, volume: np.ndarray) -> np.ndarray:
        """Denoised volume (in the units of the input), computed in overlapping z-chunks."""
        if not self.weights:
            raise ValueError("the model is not trained: call fit(even, odd) first")
        volume = _check_volume(volume)
        margin = int(math.ceil(4 * max(self.scales_px))) + 2
        out = np.empty(volume.shape, dtype=np.float32)
        nz = volume.shape[0]
        for start in range(0, nz, self.chunk_slices):
            stop = min(nz, start + self.chunk_slices)
            low, high = max(0, start - margin), min(nz, stop + margin)
            out[start:stop] = self._predict_block(volume[low:high])[start - low: stop - low]
        return out

    def _predict_block(self, volume: np.ndarray) -> np.ndarray:
        features, structure = self.features(volume)
        bins = self._bins(structure)
        weights = np.asarray(self.weights, dtype=np.float32)  # (bins, F)
        out = np.zeros(volume.shape, dtype=np.float32)
        for index in range(len(weights)):
            selected = bins == index
            out[selected] = np.tensordot(weights[index], features[:, selected], axes=1)
        mean, sd = self.normalisation
        return (out * sd + mean).astype(np.float32)

    def denoise_pair(self, even: np.ndarray, odd: np.ndarray) -> np.ndarray:
        """The denoised tomogram: the mean of the predictions from both halves."""
        return 0.5 * (self.predict(even) + self.predict(odd))

    def to_json(self) -> str:
        return json.dumps({"model": "FilterBankN2N", "scales_px": list(self.scales_px),
                           "n_strength_bins": self.n_strength_bins, "ridge": self.ridge,
                           "bin_edges": self.bin_edges, "weights": self.weights,
                           "normalisation": list(self.normalisation)})


@numba.njit(cache=True)
def _accumulate_normal_equations(a, y, bins, gram, rhs):  # pragma: no cover - numba
    # plain loops: BLAS on many thin per-bin matrices is slow and oversubscribes threads
    n, f = a.shape
    for i in range(n):
        b = bins[i]
        for j in range(f):
            value = np.float64(a[i, j])
            rhs[b, j] += value * y[i]
            for k in range(j, f):
                gram[b, j, k] += value * a[i, k]
    for b in range(gram.shape[0]):
        for j in range(f):
            for k in range(j):
                gram[b, j, k] = gram[b, k, j]


def _central_crop(shape: tuple[int, ...], max_voxels: int) -> tuple[slice, ...]:
    """Central crop of ``shape`` with at most ``max_voxels`` voxels (same aspect ratio)."""
    factor = min(1.0, (max_voxels / float(np.prod(shape))) ** (1 / 3))
    sizes = [max(8, int(n * factor)) for n in shape]
    return tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(shape, sizes, strict=True))


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a volume [z, y, x], got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise ValueError("volume contains NaN or infinite values")
    return volume.astype(np.float32, copy=False)
