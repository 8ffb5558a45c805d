"""FFT-based template matching in tomograms with a missing-wedge-aware angular search.

For every orientation of a uniform SO(3) grid the template is rotated in real space, filtered in
Fourier space by the tomogram's missing wedge (and optionally its CTF and a low-pass), masked and
normalised under a spherical mask, then cross-correlated with the tomogram by FFT. Dividing by the
local standard deviation of the tomogram under the same mask (computed once per tile with two
more FFT correlations) gives the normalised cross-correlation (NCC, in [-1, 1]) at every voxel.
The best score and the index of the best orientation are kept per voxel. Large tomograms are
processed in overlapping tiles. Peaks are extracted greedily with an exclusion radius, and their
orientation can be refined locally on a finer grid.

Conventions: volumes are float32 [z, y, x]; rotations are 3×3 active matrices in (x, y, z) that
turn the reference into the particle (the template rotated by R is the particle). Internally
lengths are pixels and angles radians; the interface speaks Å and degrees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z


class PreparedTemplate:
    """A template ready for the search: rotation, Fourier weight, mask, normalisation.

    Parameters
    ----------
    template : array (B, B, B)
        Reference density, contrast as it should appear in the tomogram.
    mask : array (B, B, B)
        Rotation-invariant (spherical) mask; the same mask gives the tomogram's local statistics.
    weight : array (B, B, B//2+1) or None
        Fourier weight from :func:`tomoweave.algorithms.fourier.wedge_ctf_weight`.
    """

    def __init__(self, template: np.ndarray, mask: np.ndarray, weight: np.ndarray | None):
        if template.ndim != 3 or len(set(template.shape)) != 1:
            raise ValueError(f"template must be a cubic volume, got shape {template.shape}")
        if mask.shape != template.shape:
            raise ValueError(f"mask shape {mask.shape} differs from template {template.shape}")
        self.box = template.shape[0]
        self.template = np.ascontiguousarray(template, dtype=np.float32)
        self.mask = mask.astype(np.float32)
        # the zero-padding needed around a tile: how far the mask reaches from the centre
        grid = np.indices(mask.shape) - self.box // 2
        reach = np.sqrt((grid**2).sum(axis=0))[self.mask > 0]
        self.reach_px = int(np.ceil(reach.max())) + 1 if reach.size else self.box // 2
        self.mask_sum = float(self.mask.sum())
        self.weight = weight

    def rotated(self, rotation: np.ndarray) -> np.ndarray:
        """Rotated, filtered template, zero-mean and unit-variance under the mask, times mask."""
        volume = rotate_volume(self.template, rotation, order=1)
        if self.weight is not None:
            volume = scipy.fft.irfftn(scipy.fft.rfftn(volume, workers=-1) * self.weight,
                                      s=volume.shape, workers=-1)
        mean = float((volume * self.mask).sum() / self.mask_sum)
        centred = volume - mean
        # the mask-weighted variance matches the tomogram's local variance under the same mask
        norm = float(np.sqrt((self.mask * centred**2).sum() / self.mask_sum))
        return (centred * self.mask / max(norm, 1e-12)).astype(np.float32)


# ----------------------------------------------------------------------------- the search
@dataclass
class MatchResult:
    """Best NCC per voxel, the index of its orientation, and the orientations searched."""

    scores: np.ndarray  # float32 [z, y, x]
    rotation_index: np.ndarray  # int32 [z, y, x], index into rotations
    rotations: np.ndarray  # (N, 3, 3)


@numba.njit(cache=True)
def _update_best(cc, inv_norm, best, index, rotation_index, offset):  # pragma: no cover - numba
    nz, ny, nx = best.shape
    oz, oy, ox = offset
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                score = cc[z + oz, y + oy, x + ox] * inv_norm[z, y, x]
                if score > best[z, y, x]:
                    best[z, y, x] = score
                    index[z, y, x] = rotation_index


def _tile_grid(shape: tuple[int, ...], halo: int, max_voxels: int) -> list[tuple[slice, ...]]:
    """Interior regions that cover ``shape``; each with its halo fits ``max_voxels``."""
    counts = [1, 1, 1]
    while True:
        lengths = [-(-s // c) for s, c in zip(shape, counts, strict=True)]
        if np.prod([n + 2 * halo for n in lengths]) <= max_voxels or max(lengths) <= 2 * halo:
            break
        axis = int(np.argmax(lengths))
        counts[axis] += 1
    edges = [np.linspace(0, s, c + 1).round().astype(int) for s, c in zip(shape, counts, strict=True)]
    return [
        (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        for z0, z1 in zip(edges[0][:-1], edges[0][1:], strict=True)
        for y0, y1 in zip(edges[1][:-1], edges[1][1:], strict=True)
        for x0, x1 in zip(edges[2][:-1], edges[2][1:], strict=True)
    ]


def _padded_tile(volume: np.ndarray, region: tuple[slice, ...], halo: int,
                 fft_shape: tuple[int, ...], mean: float) -> np.ndarray:
    """The region plus its halo minus the volume's mean, zero where it leaves the volume.

    One mean for all tiles: the fill outside the volume is then the same for every tile, so
    tiled and untiled searches agree everywhere.
    """
    tile = np.zeros(fft_shape, dtype=np.float32)
    source, target = [], []
    for sl, size in zip(region, volume.shape, strict=True):
        lo, hi = max(0, sl.start - halo), min(size, sl.stop + halo)
        source.append(slice(lo, hi))
        target.append(slice(lo - (sl.start - halo), hi - (sl.start - halo)))
    block = np.asarray(volume[tuple(source)], dtype=np.float32)
    tile[tuple(target)] = block - mean
    return tile


def _wrap_indices(box: int, fft_shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Index arrays that put a box centred at box // 2 around the origin of a periodic grid."""
    return np.ix_(*[(np.arange(box) - box // 2) % n for n in fft_shape])


class _PrunedRfft:
    """rfftn of a small box centred at the origin of a large periodic grid, skipping zeros.

    The box is transformed along x, then y, then z, each time only over the lines that can hold
    non-zero values: about 0.45 of a full rfftn of the grid for a small box.
    """

    def __init__(self, box: int, fft_shape: tuple[int, int, int]):
        self.shape = fft_shape
        self.index = [(np.arange(box) - box // 2) % n for n in fft_shape]
        half = fft_shape[2] // 2 + 1
        self.rows = np.zeros((box, box, fft_shape[2]), dtype=np.float32)
        self.planes = np.zeros((box, fft_shape[1], half), dtype=np.complex64)
        self.volume = np.zeros((fft_shape[0], fft_shape[1], half), dtype=np.complex64)

    def __call__(self, box_values: np.ndarray) -> np.ndarray:
        iz, iy, ix = self.index
        self.rows[:, :, ix] = box_values
        self.planes[:, iy, :] = scipy.fft.rfft(self.rows, axis=2, workers=-1)
        self.volume[iz] = scipy.fft.fft(self.planes, axis=1, workers=-1)
        return scipy.fft.fft(self.volume, axis=0, workers=-1)


def _local_norm(tile_ft: np.ndarray, tile: np.ndarray, mask_ft: np.ndarray, mask_sum: float,
                fft_shape: tuple[int, ...]) -> np.ndarray:
    """1 / (mask_sum × local std under the mask) at every voxel (0 where the std vanishes)."""
    mean = scipy.fft.irfftn(tile_ft * mask_ft, s=fft_shape, workers=-1) / mask_sum
    squares = scipy.fft.rfftn(tile * tile, workers=-1)
    mean_sq = scipy.fft.irfftn(squares * mask_ft, s=fft_shape, workers=-1) / mask_sum
    variance = np.maximum(mean_sq - mean * mean, 0.0)
    std = np.sqrt(variance, dtype=np.float32)
    sample = std.ravel()[:: max(1, std.size // 100_000)]  # a median of a sample is enough
    floor = 1e-3 * float(np.median(sample[sample > 0])) if np.any(sample > 0) else 1.0
    with np.errstate(divide="ignore"):
        return np.where(std > floor, 1.0 / (mask_sum * std), 0.0).astype(np.float32)


def match_template(tomogram: np.ndarray, template: PreparedTemplate, rotations: np.ndarray,
                   tomogram_filter: Callable[[tuple[int, ...]], np.ndarray] | None = None,
                   max_tile_voxels: int = 2**24,
                   progress: Callable[[int, int], None] | None = None) -> MatchResult:
    """Normalised cross-correlation of the template over all rotations at every voxel.

    Parameters
    ----------
    tomogram : array (Z, Y, X)
        The tomogram (any float dtype; a memory map works: tiles are read one at a time).
    template : PreparedTemplate
        The template with its mask and Fourier weight.
    rotations : array (N, 3, 3)
        Orientations to search (e.g. :func:`angular_sampling`).
    tomogram_filter : callable(fft_shape) -> rfftn weight, optional
        Filter applied to each tomogram tile before matching (e.g. the same low-pass).
    max_tile_voxels : int
        Largest tile (with its halo of half a template box) held in memory at once.
    progress : callable(done, total), optional
    """
    if tomogram.ndim != 3:
        raise ValueError(f"tomogram must be 3D [z, y, x], got shape {tomogram.shape}")
    rotations = np.asarray(rotations, dtype=float).reshape(-1, 3, 3)
    halo = min(template.box // 2 + 1, template.reach_px)
    scores = np.full(tomogram.shape, -1.0, dtype=np.float32)
    index = np.zeros(tomogram.shape, dtype=np.int32)
    tiles = _tile_grid(tomogram.shape, halo, max_tile_voxels)
    total, done = len(tiles) * len(rotations), 0
    # several tiles reuse the rotated templates when they fit in ~256 MB
    cache = len(tiles) > 1 and len(rotations) * template.box**3 <= 2**26
    rotated = [template.rotated(r) for r in rotations] if cache else None
    step = max(1, tomogram.shape[0] // 16)
    mean = float(np.mean(tomogram[::step], dtype=np.float64))  # a sample: memory maps stay cheap
    for region in tiles:
        fft_shape = tuple(scipy.fft.next_fast_len(max(s.stop - s.start + 2 * halo, template.box),
                                                  real=True) for s in region)
        tile = _padded_tile(tomogram, region, halo, fft_shape, mean)
        tile_ft = scipy.fft.rfftn(tile, workers=-1)
        if tomogram_filter is not None:
            tile_ft *= tomogram_filter(fft_shape)
            tile = scipy.fft.irfftn(tile_ft, s=fft_shape, workers=-1).astype(np.float32)
        wrap = _wrap_indices(template.box, fft_shape)
        padded = np.zeros(fft_shape, dtype=np.float32)
        padded[wrap] = template.mask
        mask_ft = np.conj(scipy.fft.rfftn(padded, workers=-1))
        pruned = _PrunedRfft(template.box, fft_shape)
        interior = tuple(slice(halo, halo + s.stop - s.start) for s in region)
        inv_norm = np.ascontiguousarray(_local_norm(tile_ft, tile, mask_ft, template.mask_sum,
                                                    fft_shape)[interior])
        best = np.ascontiguousarray(scores[region])
        best_index = np.ascontiguousarray(index[region])
        for i, rotation in enumerate(rotations):
            product = pruned(rotated[i] if rotated is not None else template.rotated(rotation))
            np.conjugate(product, out=product)
            product *= tile_ft
            cc = scipy.fft.irfftn(product, s=fft_shape, workers=-1, overwrite_x=True)
            _update_best(cc, inv_norm, best, best_index, i, np.array([halo] * 3))
            done += 1
            if progress is not None:
                progress(done, total)
        scores[region], index[region] = best, best_index
    return MatchResult(scores=scores, rotation_index=index, rotations=rotations)


# ----------------------------------------------------------------------------- peaks
def find_peaks(scores: np.ndarray, radius_px: float, threshold: float, max_count: int,
               border_px: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Greedy peak extraction: best first, nothing within ``radius_px`` of an accepted peak.

    Returns
    -------
    positions_zyx : int array (K, 3)
        Voxel indices [z, y, x] of the peaks, best first.
    values : float array (K,)
    """
    size = max(3, 2 * int(radius_px // 2) + 1)
    local_max = ndimage.maximum_filter(scores, size=size, mode="nearest")
    candidate = (scores >= local_max) & (scores >= threshold)
    if border_px > 0:
        inner = np.zeros_like(candidate)
        b = [min(border_px, (s - 1) // 2) for s in scores.shape]
        inner[b[0]:scores.shape[0] - b[0], b[1]:scores.shape[1] - b[1],
              b[2]:scores.shape[2] - b[2]] = True
        candidate &= inner
    positions = np.argwhere(candidate)
    values = scores[candidate]
    order = np.argsort(-values, kind="stable")
    positions, values = positions[order], values[order]
    accepted: list[int] = []
    tree_points: list[np.ndarray] = []
    for i, position in enumerate(positions):
        if len(accepted) >= max_count:
            break
        if tree_points:
            distances = np.linalg.norm(np.asarray(tree_points) - position, axis=1)
            if distances.min() < radius_px:
                continue
        accepted.append(i)
        tree_points.append(position)
    return positions[accepted].astype(int), values[accepted].astype(float)


# ----------------------------------------------------------------------------- refinement
def local_score(subvolume: np.ndarray, template: PreparedTemplate, rotation: np.ndarray) -> float:
    """NCC of the rotated template with a subvolume of the same box, centred."""
    mask, total = template.mask, template.mask_sum
    mean = float((subvolume * mask).sum() / total)
    variance = float((mask * (subvolume - mean) ** 2).sum() / total)
    if variance <= 0:
        return 0.0
    return float((template.rotated(rotation) * subvolume).sum() / (total * np.sqrt(variance)))


def refine_orientation(subvolume: np.ndarray, template: PreparedTemplate, rotation: np.ndarray,
                       step_deg: float, levels: int = 3) -> tuple[np.ndarray, float]:
    """Hill-climb the orientation on finer grids (step/2, step/4, …) at one position.

    Each level tries small rotations about the particle's x, y and z axes (both signs) and
    moves while the NCC improves (at most twice per level).
    """
    best_rotation = np.asarray(rotation, dtype=float)
    best_score = local_score(subvolume, template, best_rotation)
    for level in range(1, levels + 1):
        angle = step_deg / 2**level
        steps = [f(s * angle) for f in (rotation_x, rotation_y, rotation_z) for s in (-1, 1)]
        for _ in range(2):
            trials = [best_rotation @ small for small in steps]
            trial_scores = [local_score(subvolume, template, r) for r in trials]
            k = int(np.argmax(trial_scores))
            if trial_scores[k] <= best_score:
                break
            best_rotation, best_score = trials[k], trial_scores[k]
    return best_rotation, best_score


def subvolume_at(volume: np.ndarray, centre_zyx: np.ndarray, box: int) -> np.ndarray:
    """Box of ``box`` voxels centred (index box // 2) on an integer voxel, zero-padded outside."""
    out = np.zeros((box,) * 3, dtype=np.float32)
    source, target = [], []
    for c, size in zip(np.asarray(centre_zyx, dtype=int), volume.shape, strict=True):
        lo = c - box // 2
        s0, s1 = max(0, lo), min(size, lo + box)
        source.append(slice(s0, s1))
        target.append(slice(s0 - lo, s1 - lo))
    out[tuple(target)] = volume[tuple(source)]
    return out
