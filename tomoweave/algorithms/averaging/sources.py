"""Where the refinement reads particle images from: memory, or batches loaded on demand.

Refinement works at a box that grows with the resolution (Fourier cropping), one batch of
particles at a time, so the memory it needs is one batch at full size plus, when it fits in
the budget, all particles at the working box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tomoweave.algorithms.fourier import crop_rfft


class ImageSource:
    """Premultiplied spectra and CTF² weights of N particles, in batches at any smaller box.

    Parameters
    ----------
    count : int
        Number of particles.
    box_px, pixel_size_a : int, float
        Box and pixel size of the stored images.
    load : callable(indices) -> (data_ft, weight)
        Arrays (n, B, B, B//2+1) of the particles at ``indices``.
    memory_budget_bytes : float
        Cropped batches are kept for later iterations while they fit in this budget.
    """

    def __init__(self, count: int, box_px: int, pixel_size_a: float,
                 load: Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]], *,
                 memory_budget_bytes: float = 2e9):
        self.count, self.box_px, self.pixel_size_a = int(count), int(box_px), float(pixel_size_a)
        self._load = load
        self._budget = float(memory_budget_bytes)
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0.0

    @classmethod
    def from_arrays(cls, data_ft: np.ndarray, weight: np.ndarray,
                    pixel_size_a: float) -> ImageSource:
        """A source over arrays already in memory (e.g. a ParticleImages' data_ft and weight)."""
        if data_ft.shape != weight.shape or data_ft.ndim != 4:
            raise ValueError(f"data_ft {data_ft.shape} and weight {weight.shape}: expected one "
                             "shape (N, B, B, B//2+1)")

        def load(indices):
            return data_ft[np.asarray(indices)], weight[np.asarray(indices)]

        source = cls(data_ft.shape[0], data_ft.shape[1], pixel_size_a, load,
                     memory_budget_bytes=0.0)
        source._full = (data_ft, weight)
        return source

    def batch(self, indices: Sequence[int], box_px: int) -> tuple[np.ndarray, np.ndarray]:
        """(data_ft, weight) of the particles at ``indices``, Fourier-cropped to ``box_px``."""
        key = (int(box_px), tuple(int(i) for i in indices))
        if key in self._cache:
            return self._cache[key]
        data, weight = self._load(list(key[1]))
        if box_px != self.box_px:
            data = np.ascontiguousarray(crop_rfft(data, box_px))
            weight = np.ascontiguousarray(crop_rfft(weight, box_px))
        size = data.nbytes + weight.nbytes
        if box_px != self.box_px and self._cached_bytes + size <= self._budget:
            self._cache[key] = (data, weight)
            self._cached_bytes += size
        return data, weight

    def forget(self, keep_box_px: int | None = None) -> None:
        """Drop the cached batches (except those at ``keep_box_px``)."""
        self._cache = {k: v for k, v in self._cache.items() if k[0] == keep_box_px}
        self._cached_bytes = float(sum(d.nbytes + w.nbytes for d, w in self._cache.values()))


def batches(indices: np.ndarray, size: int) -> list[np.ndarray]:
    """``indices`` cut into consecutive batches of at most ``size``."""
    indices = np.asarray(indices)
    return [indices[start:start + size] for start in range(0, len(indices), max(1, size))]
