"""Weighted reconstruction from poses: Σ_i R_i(data_i) / (Σ_i R_i(weight_i) + regulariser).

Each particle's CTF-premultiplied spectrum has its shift undone and its voxels splatted into a
reference-frame grid padded by 2 at Rᵀ k (trilinear), together with its CTF² weight (RELION's
back-projector). After all particles (and the symmetry mates, by symmetrising both sums) the
ratio is taken with a per-shell Wiener regulariser and transformed back. Voxels that no
particle reached (identical orientations leave gaps between the padded grid's voxels) are
filled from their neighbours.

Shifts are (x, y, z) in pixels of the box: the particle's centre lies at box // 2 + shift.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tomoweave.algorithms.averaging import gridding

PAD = 2


class Reconstructor:
    """Accumulates particles of one box size into a reference-frame Fourier grid.

    Parameters
    ----------
    box_px : int
        Box of the particle images (and of the map).
    radius_px : float, optional
        Highest frequency inserted, in Fourier voxels of the box (default: box // 2 - 1).
    """

    def __init__(self, box_px: int, radius_px: float | None = None):
        self.box_px = int(box_px)
        self.padded_px = PAD * self.box_px
        limit = self.box_px // 2 - 1
        self.radius_px = limit if radius_px is None else min(float(radius_px), limit)
        self.numerator = np.zeros((self.padded_px,) * 3, dtype=np.complex64)
        self.denominator = np.zeros((self.padded_px,) * 3, dtype=np.float32)
        self.count = 0
        voxels = gridding.half_grid_voxels(self.box_px, self.radius_px)
        self._flat, self._k = voxels["flat"], voxels["k"]
        self._multiplicity = voxels["multiplicity"]
        # the data's phase origin is voxel 0; the reference's is the box centre
        self._centring = np.exp(2j * np.pi * (self._k @ np.full(3, self.box_px // 2))
                                / self.box_px).astype(np.complex64)

    def add(self, data_ft: np.ndarray, weight: np.ndarray, rotations: np.ndarray,
            shifts_px: np.ndarray | None = None) -> None:
        """Insert particles: data_ft, weight (n, B, B, B//2+1), rotations (n, 3, 3), shifts (n, 3)."""
        rotations = np.asarray(rotations, dtype=float).reshape(-1, 3, 3)
        shifts = (np.zeros((len(rotations), 3)) if shifts_px is None
                  else np.asarray(shifts_px, dtype=float).reshape(-1, 3))
        if data_ft.shape[0] != len(rotations) or len(shifts) != len(rotations):
            raise ValueError(f"{data_ft.shape[0]} particles but {len(rotations)} rotations and "
                             f"{len(shifts)} shifts")
        if data_ft.shape[1] != self.box_px:
            raise ValueError(f"particle box {data_ft.shape[1]} px, reconstructor {self.box_px}")
        data = data_ft.reshape(len(rotations), -1)
        weights = weight.reshape(len(rotations), -1)
        for i in range(len(rotations)):
            phase = np.exp(2j * np.pi * (self._k @ shifts[i]) / self.box_px) * self._centring
            gridding.insert_voxels(self.numerator, self.denominator,
                                   data[i, self._flat] * phase, weights[i, self._flat],
                                   self._k, rotations[i], self._multiplicity, scale=PAD)
        self.count += len(rotations)

    def merge(self, other: Reconstructor) -> None:
        """Add another reconstructor's sums (e.g. one filled in another thread)."""
        self.numerator += other.numerator
        self.denominator += other.denominator
        self.count += other.count

    def reconstruct(self, operators: np.ndarray | None = None, fsc: np.ndarray | None = None,
                    epsilon: float = 1e-3) -> np.ndarray:
        """The map (box³, float32).

        Parameters
        ----------
        operators : (G, 3, 3), optional
            Point-group operators: the sums are symmetrised before the division.
        fsc : (box // 2 + 1,), optional
            An FSC between half maps: the regulariser becomes a Wiener filter,
            mean weight × (1 − FSC) / FSC per shell (RELION's τ² from the FSC).
        epsilon : float
            Smallest regulariser, as a fraction of each shell's mean weight.
        """
        numerator = hermitian_sum(self.numerator)
        denominator = hermitian_sum(self.denominator)
        if operators is not None and len(operators) > 1:
            numerator = gridding.symmetrise_grid(numerator, operators)
            denominator = gridding.symmetrise_grid(denominator, operators)
        numerator, denominator = self._fill_gaps(numerator, denominator)
        regulariser = self._regulariser(denominator, fsc, epsilon)
        ratio = numerator / np.where(denominator > 0, denominator + regulariser, np.inf)
        return gridding.map_from_grid(ratio.astype(np.complex64), self.box_px)

    def _fill_gaps(self, numerator: np.ndarray, denominator: np.ndarray):
        """Voxels inside the inserted radius that no splat reached take their neighbours' mean."""
        axis = np.arange(self.padded_px) - self.padded_px // 2
        radius = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2
                         + axis[None, None, :] ** 2)
        gaps = (denominator <= 0) & (radius <= self.radius_px * PAD)
        if not gaps.any():
            return numerator, denominator
        kernel = np.ones((3, 3, 3), dtype=np.float32)
        smooth_den = ndimage.convolve(denominator, kernel, mode="constant")
        smooth_num = (ndimage.convolve(numerator.real, kernel, mode="constant")
                      + 1j * ndimage.convolve(numerator.imag, kernel, mode="constant"))
        count = ndimage.convolve((denominator > 0).astype(np.float32), kernel, mode="constant")
        fill = gaps & (count > 0)
        numerator, denominator = numerator.copy(), denominator.copy()
        numerator[fill] = smooth_num[fill] / count[fill]
        denominator[fill] = smooth_den[fill] / count[fill]
        return numerator, denominator

    def _regulariser(self, denominator: np.ndarray, fsc: np.ndarray | None,
                     epsilon: float) -> np.ndarray:
        centre = self.padded_px // 2
        axis = np.arange(self.padded_px) - centre
        radius = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2
                         + axis[None, None, :] ** 2) / PAD
        shells = np.minimum(np.rint(radius).astype(int), self.box_px // 2 + 1)
        filled = denominator > 0
        sums = np.bincount(shells[filled], weights=denominator[filled],
                           minlength=self.box_px // 2 + 2)
        counts = np.bincount(shells[filled], minlength=self.box_px // 2 + 2)
        mean = sums / np.maximum(counts, 1)
        factor = np.full(len(mean), float(epsilon))
        if fsc is not None:
            values = np.clip(np.asarray(fsc, dtype=float), 1e-3, 0.999)
            n = min(len(values), len(factor))
            factor[:n] = np.maximum(factor[:n], (1 - values[:n]) / values[:n])
            factor[n:] = 1e3  # beyond the FSC's shells: nothing is trusted
        return (mean * factor)[shells].astype(np.float32)


def reconstruct(data_ft: np.ndarray, weight: np.ndarray, rotations: np.ndarray,
                shifts_px: np.ndarray | None = None, *, operators: np.ndarray | None = None,
                fsc: np.ndarray | None = None, radius_px: float | None = None) -> np.ndarray:
    """One map from particles and their poses (see :class:`Reconstructor`), box³ float32."""
    builder = Reconstructor(data_ft.shape[1], radius_px)
    builder.add(data_ft, weight, rotations, shifts_px)
    return builder.reconstruct(operators, fsc)


def hermitian_sum(grid: np.ndarray) -> np.ndarray:
    """grid(q) + conj(grid(−q)) on a centred grid: the conjugate half of every inserted voxel."""
    mirrored = np.roll(grid[::-1, ::-1, ::-1], 1, axis=(0, 1, 2))
    return grid + (np.conj(mirrored) if np.iscomplexobj(grid) else mirrored)
