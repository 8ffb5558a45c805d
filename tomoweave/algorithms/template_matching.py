"""FFT-based template matching in tomograms with a missing-wedge-aware angular search.

For every orientation of an SO(3) grid the template is rotated in real space, filtered in
Fourier space by the tomogram's missing wedge (and its CTF, a low-pass, a whitening filter),
masked and normalised under a spherical mask, then cross-correlated with the tomogram by FFT.
Dividing by the local standard deviation of the tomogram under the same mask gives the local
normalised cross-correlation (NCC, in [-1, 1]) at every voxel; the best score and the index of
its orientation are kept per voxel.

Speed comes from not transforming what is known to be zero. The tomogram is searched inside
the template's band: the Fourier lines along ky whose (kz, kx) lie in the measured wedge and
within the band limit (about half of all lines at Nyquist and ±60°). The template's transform
is pruned (its box is small), the product and the first inverse stage run on those lines only,
and the last two inverse stages only produce the tile's interior. Orientations are shared out
over threads that each own their buffers and best-score maps (FFTs, numba kernels and numpy
release the GIL), merged at the end of each tile. Large tomograms are processed in tiles; a
whole axis needs only one template reach of zero padding (the correlation is circular).

Conventions: volumes are float32 [z, y, x]; rotations are 3×3 active matrices in (x, y, z) that
turn the reference into the particle. Lengths inside are pixels, frequencies cycles/pixel.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ducc0
import numba
import numpy as np
import scipy.fft

from tomoweave.algorithms.fourier import rfft_frequencies, wedge_taper
from tomoweave.algorithms.volumes import rotate_volume


class PreparedTemplate:
    """A template ready for the search: rotation, Fourier weight, mask, normalisation.

    Parameters
    ----------
    template : array (B, B, B)
        Reference density, contrast as it should appear in the tomogram.
    mask : array (B, B, B)
        Rotation-invariant (spherical) mask; the same mask gives the tomogram's local statistics.
    weight : array (B, B, B//2+1) or None
        Fourier weight, e.g. from :func:`tomoweave.algorithms.fourier.wedge_ctf_weight`.
    tilt_range_deg : (float, float) or None
        Measured tilt range: the search ignores the missing wedge's Fourier lines.
    band_limit : float or None
        Highest frequency searched, cycles/pixel (≤ 0.5); None: every line of the grid.
    """

    def __init__(self, template: np.ndarray, mask: np.ndarray, weight: np.ndarray | None, *,
                 tilt_range_deg: tuple[float, float] | None = None,
                 band_limit: float | None = None):
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
        self.tilt_range_deg = tilt_range_deg
        self.band_limit = min(0.5, band_limit) if band_limit else None

    def rotated(self, rotation: np.ndarray, workers: int = -1) -> np.ndarray:
        """Rotated, filtered template, zero-mean and unit-variance under the mask, times mask."""
        volume = rotate_volume(self.template, rotation, order=1)
        if self.weight is not None:
            volume = scipy.fft.irfftn(scipy.fft.rfftn(volume, workers=workers) * self.weight,
                                      s=volume.shape, workers=workers)
        mean = float((volume * self.mask).sum() / self.mask_sum)
        centred = volume - mean
        # the mask-weighted variance matches the tomogram's local variance under the same mask
        norm = float(np.sqrt((self.mask * centred**2).sum() / self.mask_sum))
        return (centred * self.mask / max(norm, 1e-12)).astype(np.float32)

    def search_band(self, fft_shape: tuple[int, int, int]) -> np.ndarray:
        """Weight [kz, kx] of the ky-lines searched on an rfft grid (0: line not searched).

        The measured wedge with a soft edge (:func:`wedge_taper`, 5°) within the band limit
        (plus one grid step: the low-pass is soft too). A tile is filtered by it before the
        search, so what the search leaves out also leaves the local statistics.
        """
        kz, _, kx = rfft_frequencies(fft_shape)
        kz, kx = np.broadcast_arrays(kz[:, 0, :], kx[:, 0, :])
        weight = np.ones(kz.shape, dtype=np.float32)
        if self.tilt_range_deg is not None:
            weight = wedge_taper(fft_shape, *self.tilt_range_deg)[:, 0, :]
        if self.band_limit is not None:
            slack = 1.0 / min(fft_shape[0], fft_shape[2])
            weight = np.where(kz**2 + kx**2 <= (self.band_limit + slack) ** 2, weight, 0.0)
        return weight.astype(np.float32)


@dataclass
class MatchResult:
    """Best NCC per voxel, the index of its orientation, and the orientations searched."""

    scores: np.ndarray  # float32 [z, y, x]
    rotation_index: np.ndarray  # int32 [z, y, x], index into rotations
    rotations: np.ndarray  # (N, 3, 3)


# ----------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def _place_rows(box_values, wrap_x, rows):  # pragma: no cover - numba
    for z in range(box_values.shape[0]):
        for y in range(box_values.shape[1]):
            for x in range(box_values.shape[2]):
                rows[z, y, wrap_x[x]] = box_values[z, y, x]


@numba.njit(cache=True, nogil=True)
def _fill_lines(planes, line_kz, line_kx, wrap_y, out):  # pragma: no cover - numba
    """out[wrap_y[b], s] = planes[line_kz[s], b, line_kx[s]]; the other rows of out are 0."""
    out[:] = 0.0
    for b in range(wrap_y.size):
        row = wrap_y[b]
        for s in range(line_kz.size):
            out[row, s] = planes[line_kz[s], b, line_kx[s]]


@numba.njit(cache=True, nogil=True)
def _conj_multiply(template_lines, tile_lines):  # pragma: no cover - numba
    for k in range(template_lines.shape[0]):
        for s in range(template_lines.shape[1]):
            template_lines[k, s] = np.conj(template_lines[k, s]) * tile_lines[k, s]


@numba.njit(cache=True, nogil=True)
def _scatter_lines(lines, y0, line_kz, line_kx, out):  # pragma: no cover - numba
    """out[kz_s, j, kx_s] = lines[y0 + j, s]; out is zero off the lines (kept so by the caller)."""
    for j in range(out.shape[1]):
        for s in range(line_kz.size):
            out[line_kz[s], j, line_kx[s]] = lines[y0 + j, s]


@numba.njit(cache=True, nogil=True)
def _update_best(cc, x0, y0, best, index, rotation_index):  # pragma: no cover - numba
    """Keep the larger correlation (not yet normalised: the local norm is the same for all).

    Branch-free over rows, so that it vectorises: this runs over every voxel per orientation.
    """
    nz, ny, nx = cc.shape[0], cc.shape[1], best.shape[2]
    for z in range(nz):
        for y in range(ny):
            values, row, row_index = cc[z, y], best[z, y0 + y], index[z, y0 + y]
            for x in range(nx):
                value, old = values[x0 + x], row[x]
                better = value > old
                row[x] = value if better else old
                row_index[x] = rotation_index if better else row_index[x]


@numba.njit(cache=True, nogil=True)
def _merge_best(best, index, other_best, other_index):  # pragma: no cover - numba
    flat_best, flat_index = best.ravel(), index.ravel()
    other_b, other_i = other_best.ravel(), other_index.ravel()
    for i in range(flat_best.size):
        # ties go to the lower orientation index, so the result does not depend on threads
        if other_b[i] > flat_best[i] or (other_b[i] == flat_best[i] and other_i[i] < flat_index[i]):
            flat_best[i] = other_b[i]
            flat_index[i] = other_i[i]


# ----------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class _Tile:
    """One tile: the interior it scores, its FFT grid and where the interior starts in it."""

    region: tuple[slice, slice, slice]  # interior, in volume voxels
    fft_shape: tuple[int, int, int]
    start: tuple[int, int, int]  # tile index of the interior's first voxel, per axis


def _axis_layout(start: int, stop: int, size: int, halo: int, box: int) -> tuple[int, int]:
    """(FFT length, interior offset) of one axis of a tile.

    A tile spanning the whole axis takes the next fast length (the correlation is circular:
    within ``face_band`` of the faces it mixes the two faces, and those voxels are not scored);
    otherwise the data reach one halo beyond the interior on each side.
    """
    if start == 0 and stop == size:
        return scipy.fft.next_fast_len(max(size, box), real=True), 0
    return scipy.fft.next_fast_len(max(stop - start + 2 * halo, box), real=True), halo


def face_band(shape: tuple[int, ...], halo: int, box: int) -> tuple[int, ...]:
    """Voxels at each face whose template would reach across the volume's face, per axis."""
    return tuple(max(0, halo - (_axis_layout(0, n, n, halo, box)[0] - n)) for n in shape)


def _tile_grid(shape: tuple[int, ...], halo: int, max_voxels: int,
               box: int | None = None) -> list[_Tile]:
    """Tiles whose interiors cover ``shape``; each FFT grid holds at most ``max_voxels``."""
    box = box or 2 * halo
    counts = [1, 1, 1]
    while True:
        edges = [np.linspace(0, s, c + 1).round().astype(int)
                 for s, c in zip(shape, counts, strict=True)]
        sizes = [_axis_layout(int(e[0]), int(e[1]), s, halo, box)[0]
                 for e, s in zip(edges, shape, strict=True)]
        lengths = [-(-s // c) for s, c in zip(shape, counts, strict=True)]
        if np.prod(sizes) <= max_voxels or max(lengths) <= 2 * halo:
            break
        counts[int(np.argmax(lengths))] += 1
    tiles = []
    for z0, z1 in zip(edges[0][:-1], edges[0][1:], strict=True):
        for y0, y1 in zip(edges[1][:-1], edges[1][1:], strict=True):
            for x0, x1 in zip(edges[2][:-1], edges[2][1:], strict=True):
                bounds = ((z0, z1), (y0, y1), (x0, x1))
                layout = [_axis_layout(int(a), int(b), s, halo, box)
                          for (a, b), s in zip(bounds, shape, strict=True)]
                tiles.append(_Tile(tuple(slice(int(a), int(b)) for a, b in bounds),
                                   tuple(n for n, _ in layout), tuple(o for _, o in layout)))
    return tiles


def _padded_tile(volume: np.ndarray, tile: _Tile, mean: float) -> np.ndarray:
    """The tile's data minus the volume's mean, zero where it leaves the volume.

    One mean for all tiles: the fill outside the volume is then the same for every tile, so
    tiled and untiled searches agree everywhere.
    """
    out = np.zeros(tile.fft_shape, dtype=np.float32)
    source, target = [], []
    for sl, offset, size, length in zip(tile.region, tile.start, volume.shape, tile.fft_shape,
                                        strict=True):
        lo = max(0, sl.start - offset)
        hi = min(size, sl.start - offset + length)
        source.append(slice(lo, hi))
        target.append(slice(lo - (sl.start - offset), hi - (sl.start - offset)))
    out[tuple(target)] = np.asarray(volume[tuple(source)], dtype=np.float32) - mean
    return out


def _local_norm(tile_ft: np.ndarray, tile: np.ndarray, mask: np.ndarray, mask_sum: float,
                fft_shape: tuple[int, ...], interior: tuple[slice, ...]) -> np.ndarray:
    """1 / (mask_sum × local std under the mask) on the interior (0 where the std vanishes)."""
    padded = np.zeros(fft_shape, dtype=np.float32)
    padded[np.ix_(*[(np.arange(mask.shape[0]) - mask.shape[0] // 2) % n for n in fft_shape])] = \
        mask
    mask_ft = np.conj(scipy.fft.rfftn(padded, workers=-1))
    mean = scipy.fft.irfftn(tile_ft * mask_ft, s=fft_shape, workers=-1)[interior] / mask_sum
    squares = scipy.fft.rfftn(tile * tile, workers=-1)
    mean_sq = scipy.fft.irfftn(squares * mask_ft, s=fft_shape, workers=-1)[interior] / mask_sum
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0), dtype=np.float32)
    sample = std.ravel()[:: max(1, std.size // 100_000)]  # a median of a sample is enough
    floor = 1e-3 * float(np.median(sample[sample > 0])) if np.any(sample > 0) else 1.0
    with np.errstate(divide="ignore"):
        return np.ascontiguousarray(np.where(std > floor, 1.0 / (mask_sum * std), 0.0),
                                    dtype=np.float32)


# ----------------------------------------------------------------------------- the search
class _TileSearch:
    """Everything about one tile that all orientations share, read-only once built.

    Fourier lines along ky are stored as columns: ``lines[ky, s]`` for the line s at
    (line_kz[s], line_kx[s]), so that gathering and scattering them run along memory.
    """

    def __init__(self, tile: _Tile, template: PreparedTemplate, tile_ft: np.ndarray,
                 inv_norm: np.ndarray):
        self.tile = tile
        lz, _, lx = tile.fft_shape
        box = template.box
        band = template.search_band(tile.fft_shape)
        self.line_kz, self.line_kx = (a.astype(np.int64) for a in np.nonzero(band > 0))
        self.tile_lines = np.ascontiguousarray(tile_ft[self.line_kz, :, self.line_kx].T)
        self.kx_count = int(self.line_kx.max()) + 1  # the z stage skips higher kx: all zero
        self.wrap = [((np.arange(box) - box // 2) % n).astype(np.int64) for n in tile.fft_shape]
        self.interior = [s.stop - s.start for s in tile.region]
        self.inv_norm = inv_norm
        # y-chunks of the last two inverse stages: a few MB each, so they stay in cache
        row_bytes = lz * self.kx_count * 8
        self.chunk_y = int(max(1, min(self.interior[1], (2 << 20) // row_bytes)))
        self.fraction = self.line_kz.size / (lz * (lx // 2 + 1))


class _Worker:
    """Buffers and best-correlation maps of one thread for one tile.

    Every transform writes into a buffer made once (ducc0's ``out=``): nothing is allocated
    per orientation. Transforms are unnormalised; the 1 / N goes into the local norm.
    """

    def __init__(self, search: _TileSearch, box: int):
        lz, ly, lx = search.tile.fft_shape
        kx = lx // 2 + 1
        self.search = search
        self.rows = np.zeros((box, box, lx), dtype=np.float32)
        self.planes = np.zeros((lz, box, kx), dtype=np.complex64)  # zero off the box's rows
        self.planes_ft = np.zeros((lz, box, kx), dtype=np.complex64)
        self.lines = np.zeros((ly, search.line_kz.size), dtype=np.complex64)
        cy = search.chunk_y
        self.chunk = np.zeros((lz, cy, kx), dtype=np.complex64)  # zero off the lines
        self.chunk_ft = np.zeros((lz, cy, kx), dtype=np.complex64)  # zero beyond kx_count
        self.cc = np.zeros((search.interior[0], cy, lx), dtype=np.float32)
        self.best = np.full(search.interior, -np.inf, dtype=np.float32)
        self.index = np.zeros(search.interior, dtype=np.int32)
        # the box's rows land at two runs of the periodic z axis: [0, box - box//2), [lz - box//2, lz)
        self.high, self.low = box // 2, lz - box // 2

    def correlate(self, box_values: np.ndarray, rotation_index: int) -> None:
        s, fft = self.search, ducc0.fft
        lx = s.tile.fft_shape[2]
        z0, y0, x0 = s.tile.start
        nz, ny, _ = s.interior
        kxc = s.kx_count
        _place_rows(box_values, s.wrap[2], self.rows)
        fft.r2c(self.rows[self.high:], axes=(2,), out=self.planes[:self.rows.shape[0] - self.high])
        fft.r2c(self.rows[:self.high], axes=(2,), out=self.planes[self.low:])
        fft.c2c(self.planes[:, :, :kxc], axes=(0,), out=self.planes_ft[:, :, :kxc])
        _fill_lines(self.planes_ft, s.line_kz, s.line_kx, s.wrap[1], self.lines)
        fft.c2c(self.lines, axes=(0,), out=self.lines)
        _conj_multiply(self.lines, s.tile_lines)
        fft.c2c(self.lines, axes=(0,), forward=False, out=self.lines)
        for start in range(0, ny, s.chunk_y):
            count = min(s.chunk_y, ny - start)
            chunk, chunk_ft = self.chunk[:, :count], self.chunk_ft[:, :count]
            _scatter_lines(self.lines, y0 + start, s.line_kz, s.line_kx, chunk)
            fft.c2c(chunk[:, :, :kxc], axes=(0,), forward=False, out=chunk_ft[:, :, :kxc])
            cc = self.cc[:, :count]
            fft.c2r(chunk_ft[z0:z0 + nz], axes=(2,), lastsize=lx, forward=False, out=cc)
            _update_best(cc, x0, start, self.best, self.index, rotation_index)


def default_workers() -> int:
    """Threads for the search: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def match_template(tomogram: np.ndarray, template: PreparedTemplate, rotations: np.ndarray,
                   tomogram_filter: Callable[[tuple[int, ...]], np.ndarray] | None = None,
                   max_tile_voxels: int = 2**24,
                   progress: Callable[[int, int], None] | None = None, *,
                   workers: int | None = None) -> MatchResult:
    """Local normalised cross-correlation of the template over all rotations at every voxel.

    Voxels within :func:`face_band` of a face (where the template would reach across the
    face) are not scored: their score is -1.

    Parameters
    ----------
    tomogram : array (Z, Y, X)
        The tomogram (any float dtype; a memory map works: tiles are read one at a time).
    template : PreparedTemplate
        The template with its mask, Fourier weight and search band.
    rotations : array (N, 3, 3)
        Orientations to search (e.g. :func:`tomoweave.geometry.sampling.angular_sampling`).
    tomogram_filter : callable(fft_shape) -> rfftn weight, optional
        Filter applied to each tomogram tile before matching (e.g. the same low-pass).
    max_tile_voxels : int
        Largest tile FFT grid (interior plus halo) held in memory at once.
    progress : callable(done, total), optional
    workers : int, optional
        Threads sharing out the orientations (default: the CPUs available).
    """
    if tomogram.ndim != 3:
        raise ValueError(f"tomogram must be 3D [z, y, x], got shape {tomogram.shape}")
    rotations = np.asarray(rotations, dtype=float).reshape(-1, 3, 3)
    workers = max(1, min(workers or default_workers(), len(rotations)))
    halo = min(template.box // 2 + 1, template.reach_px)
    scores = np.full(tomogram.shape, -1.0, dtype=np.float32)
    index = np.zeros(tomogram.shape, dtype=np.int32)
    tiles = _tile_grid(tomogram.shape, halo, max_tile_voxels, template.box)
    # several tiles reuse the rotated templates when they fit in ~256 MB
    cache = len(tiles) > 1 and len(rotations) * template.box**3 <= 2**26
    rotated = [template.rotated(r) for r in rotations] if cache else None
    step = max(1, tomogram.shape[0] // 16)
    mean = float(np.mean(tomogram[::step], dtype=np.float64))  # a sample: memory maps stay cheap
    counter = _Progress(progress, len(tiles) * len(rotations))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for tile in tiles:
            search = _prepare_tile(tomogram, tile, template, tomogram_filter, mean)

            def run(subset: range, search: _TileSearch = search) -> _Worker:
                worker = _Worker(search, template.box)
                for i in subset:
                    box = rotated[i] if rotated is not None else template.rotated(rotations[i], 1)
                    worker.correlate(box, i)
                    counter.step()
                return worker

            # interleaved subsets: every thread sees coarse and fine parts of the grid alike
            results = list(pool.map(run, [range(k, len(rotations), workers)
                                          for k in range(workers)]))
            best, best_index = results[0].best, results[0].index
            for other in results[1:]:
                _merge_best(best, best_index, other.best, other.index)
            # the transforms were unnormalised: 1 / N of the inverse goes here
            scores[tile.region] = best * (search.inv_norm / np.prod(tile.fft_shape))
            index[tile.region] = best_index
    band = face_band(tomogram.shape, halo, template.box)
    for axis, width in enumerate(band):
        if width:
            view = np.moveaxis(scores, axis, 0)
            view[:width], view[-width:] = -1.0, -1.0
    return MatchResult(scores=scores, rotation_index=index, rotations=rotations)


def _prepare_tile(tomogram: np.ndarray, tile: _Tile, template: PreparedTemplate,
                  tomogram_filter: Callable | None, mean: float) -> _TileSearch:
    """Transform, filter and restrict a tile to the search band; its local statistics."""
    data = _padded_tile(tomogram, tile, mean)
    tile_ft = scipy.fft.rfftn(data, workers=-1)
    if tomogram_filter is not None:
        tile_ft *= tomogram_filter(tile.fft_shape)
    tile_ft *= template.search_band(tile.fft_shape)[:, None, :]
    data = scipy.fft.irfftn(tile_ft, s=tile.fft_shape, workers=-1).astype(np.float32)
    interior = tuple(slice(o, o + s.stop - s.start)
                     for o, s in zip(tile.start, tile.region, strict=True))
    inv_norm = _local_norm(tile_ft, data, template.mask, template.mask_sum, tile.fft_shape,
                           interior)
    return _TileSearch(tile, template, tile_ft, inv_norm)


class _Progress:
    """Thread-safe counter that calls ``progress(done, total)``."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self.lock = threading.Lock()

    def step(self) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += 1
            self.progress(self.done, self.total)
