"""Pose search: the wedge- and CTF-aware score of every candidate rotation and shift.

For a particle with premultiplied data D = W·S_R·e^{-2πi k·t} + noise (W its CTF² weight,
noise variance σ²·W) the log-likelihood of a pose, maximised over an amplitude scale, is a
monotonic function of

    score(R, t) = Σ_k Re(D(k) · conj(S(Rᵀk)) · e^{2πi k·t}) / σ²(k)  /  sqrt(Σ_k W(k) |S(Rᵀk)|² / σ²(k))

— the correlation restricted to and weighted by what the particle sampled (Förster et al.
2008's constrained correlation, with the CTF² and the noise spectrum). The numerator for all
shifts at once is one inverse FFT per rotation; the denominator needs no FFT. Dividing by the
particle's own whitened norm makes the score a correlation coefficient (−1 … 1).

Shifts are (x, y, z) pixels of the box: the particle's centre at box // 2 + shift.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms.averaging import gridding
from tomoweave.algorithms.windows import parabolic_offset


@dataclass
class PoseResult:
    """Best pose per particle: rotation index into its candidates, shift (px), score (CC)."""

    index: np.ndarray  # (n,) int
    shifts_px: np.ndarray  # (n, 3) float, x y z
    scores: np.ndarray  # (n,) float


class ScoringSetup:
    """What every particle's search shares in one pass: reference grid, voxels, noise weights.

    Parameters
    ----------
    reference : (b, b, b) float32
        The (masked, filtered) reference at the working box.
    radius_px : float
        Highest frequency used, in Fourier voxels of the working box.
    noise_weight : (b // 2 + 1,) float, optional
        1/σ² per shell (default 1: white noise).
    """

    def __init__(self, reference: np.ndarray, radius_px: float,
                 noise_weight: np.ndarray | None = None):
        self.box_px = reference.shape[0]
        self.pad = 2
        self.grid = gridding.reference_grid(reference, self.pad)
        voxels = gridding.half_grid_voxels(self.box_px, radius_px)
        self.flat, self.k = voxels["flat"], voxels["k"]
        self.full_multiplicity = 2.0 * voxels["multiplicity"]  # half grid -> full spectrum
        self.shells = voxels["shell"]
        weight = np.ones(self.box_px // 2 + 1) if noise_weight is None else noise_weight
        self.shell_weight = np.asarray(weight, dtype=np.float32)[np.minimum(
            self.shells, len(weight) - 1)]
        self._offsets: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def offsets(self, radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer shift offsets (T, 3) (z, y, x) within ``radius_px`` and their phase factors
        e^{2πi k·o / b} as real and imaginary parts, (n, T) float32 each."""
        key = float(radius_px)
        if key not in self._offsets:
            r = int(np.ceil(radius_px - 1e-9))
            steps = np.arange(-r, r + 1)
            cube = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
            offsets = cube[np.linalg.norm(cube, axis=1) <= radius_px + 1e-6]
            angles = 2 * np.pi * (self.k @ offsets[:, ::-1].T.astype(np.float32)) / self.box_px
            self._offsets[key] = (offsets, np.ascontiguousarray(np.cos(angles), np.float32),
                                  np.ascontiguousarray(np.sin(angles), np.float32))
        return self._offsets[key]


# Shift windows with more candidates than this are searched by one inverse FFT per rotation
# instead of sums over voxels: the sums cost ~ 2 n T per rotation, the FFT ~ 5 b³ log2(b³).
MAX_SUMMED_SHIFTS = 729
# Every rotation is scored at the shifts within this radius of the current one (the summed
# cost grows slowly up to ~30 shifts); in wider windows only the best rotations then go on to
# every shift of the window.
FIRST_PASS_RADIUS_PX = 2.0
SECOND_PASS_FRACTION = 0.1


def search_poses(data_ft: np.ndarray, weight: np.ndarray, setup: ScoringSetup,
                 rotations: np.ndarray, *, shift_centres_px: np.ndarray | None = None,
                 max_shift_px: float = 3.0, n_threads: int = 2) -> PoseResult:
    """Best rotation and shift of each particle among its candidates.

    Every rotation is scored at the shifts within 2 pixels of the current one; in a wider
    window the best tenth of the rotations (at least 4) are then scored at all its shifts.

    Parameters
    ----------
    data_ft, weight : (n, b, b, b//2+1)
        Premultiplied spectra and CTF² weights at the working box.
    setup : ScoringSetup
    rotations : (M, 3, 3) shared by all particles, or (n, M, 3, 3) per particle
        Candidate particle rotations (reference -> particle).
    shift_centres_px : (n, 3), optional
        Centre of each particle's shift search (its current shift); default 0.
    max_shift_px : float
        Largest shift from that centre, pixels of the working box (0: the centre only).
    n_threads : int
        Particles are scored in this many threads (the kernels release the GIL).
    """
    count = data_ft.shape[0]
    centres = (np.zeros((count, 3)) if shift_centres_px is None
               else np.asarray(shift_centres_px, dtype=float).reshape(count, 3))
    shared = np.asarray(rotations).ndim == 3
    index = np.zeros(count, dtype=int)
    shifts = np.zeros((count, 3))
    scores = np.zeros(count)

    def one(i: int) -> None:
        candidates = rotations if shared else rotations[i]
        index[i], shifts[i], scores[i] = _best_pose(data_ft[i], weight[i], setup, candidates,
                                                    centres[i], max_shift_px)

    if n_threads > 1 and count > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(one, range(count)))
    else:
        for i in range(count):
            one(i)
    return PoseResult(index, shifts, scores)


def _best_pose(data_ft, weight, setup, rotations, centre_px, max_shift_px):
    box = setup.box_px
    data = data_ft.ravel()[setup.flat]
    w_data = weight.ravel()[setup.flat]
    sampled = w_data > 0
    data_norm = max(float(np.sqrt(np.sum(setup.full_multiplicity * setup.shell_weight * sampled
                                         * np.abs(data) ** 2 / np.where(sampled, w_data, 1.0)))),
                    1e-30)
    origin = np.exp(2j * np.pi * (setup.k @ (np.asarray(centre_px) + box // 2)) / box)
    vector = data * setup.shell_weight * setup.full_multiplicity * origin
    norm_weight = setup.full_multiplicity * w_data * setup.shell_weight
    two_pass = max_shift_px > FIRST_PASS_RADIUS_PX
    offsets, cosines, sines = setup.offsets(min(max_shift_px, FIRST_PASS_RADIUS_PX))
    values = _window_scores(setup, rotations, vector, norm_weight, cosines, sines)
    chosen = np.arange(len(rotations))
    if two_pass:
        keep = max(4, int(np.ceil(SECOND_PASS_FRACTION * len(rotations))))
        chosen = np.argsort(values.max(axis=1))[::-1][:keep]
        offsets, cosines, sines = setup.offsets(max_shift_px)
        if len(offsets) > MAX_SUMMED_SHIFTS:
            found, shift, score = _best_pose_fft(data, w_data, setup, rotations[chosen],
                                                 centre_px, max_shift_px)
            return int(chosen[found]), shift, score / data_norm
        values = _window_scores(setup, rotations[chosen], vector, norm_weight, cosines, sines)
    rotation_index, shift_index = np.unravel_index(int(np.argmax(values)), values.shape)
    sub = _subpixel_from_offsets(values[rotation_index], offsets, shift_index)
    shift = np.asarray(centre_px, dtype=float) + offsets[shift_index][::-1] + sub
    score = float(values[rotation_index, shift_index]) / data_norm
    return int(chosen[rotation_index]), shift, score


def _window_scores(setup, rotations, vector, norm_weight, cosines, sines):
    """score[m, j] of rotation m at the window's shift j."""
    correlation, norms = gridding.correlate_rotated(setup.grid, rotations, setup.k, setup.pad,
                                                    vector, norm_weight, cosines, sines)
    return correlation / np.sqrt(np.maximum(norms, 1e-30))[:, None]


def _subpixel_from_offsets(values: np.ndarray, offsets: np.ndarray, best: int) -> np.ndarray:
    """Parabolic sub-pixel correction (x, y, z) around offset ``best`` of a shift window whose
    offsets (T, 3) are listed in (z, y, x) columns."""
    position = {tuple(o): j for j, o in enumerate(offsets.tolist())}
    peak = offsets[best]
    correction = np.zeros(3)
    for axis in range(3):
        step = np.zeros(3, dtype=int)
        step[axis] = 1
        left, right = position.get(tuple(peak - step)), position.get(tuple(peak + step))
        if left is not None and right is not None:
            correction[2 - axis] = parabolic_offset(values[left], values[best], values[right])
    return correction


def _best_pose_fft(data, w_data, setup, rotations, centre_px, max_shift_px):
    """Best rotation and shift over a large window: one inverse FFT per rotation."""
    box = setup.box_px
    references = gridding.sample_rotated(setup.grid, rotations, setup.k, setup.pad)
    norms = (references.real ** 2 + references.imag ** 2) @ (
        setup.full_multiplicity * w_data * setup.shell_weight)
    spectra = np.zeros((len(references), box * box * (box // 2 + 1)), dtype=np.complex64)
    # the reference's phase origin is its centre, the data's voxel 0: the correlation map
    # peaks at index box // 2 + shift
    spectra[:, setup.flat] = (data * setup.shell_weight)[None, :] * np.conj(references)
    maps = scipy.fft.irfftn(spectra.reshape(len(references), box, box, box // 2 + 1),
                            s=(box,) * 3, axes=(1, 2, 3), workers=1)
    window, offsets = _shift_window(box, centre_px, max_shift_px)
    values = maps[:, window[0]][:, :, window[1]][:, :, :, window[2]]  # (M, wz, wy, wx)
    values = values * (box**3 / np.sqrt(np.maximum(norms, 1e-30)))[:, None, None, None]
    values = np.where(offsets[None], values, -np.inf)
    best = np.unravel_index(int(np.argmax(values)), values.shape)
    peak = np.array(best[1:])
    sub = _subpixel(values[best[0]], peak)
    position_zyx = np.array([window[a][peak[a]] for a in range(3)], dtype=float) + sub
    shift_xyz = (position_zyx - box // 2)[::-1]
    return int(best[0]), shift_xyz, float(values[best])


def _shift_window(box: int, centre_px: np.ndarray, max_shift_px: float):
    """Index ranges (z, y, x; wrapped) around box // 2 + centre, and which lie in the sphere."""
    radius = int(np.ceil(max_shift_px))
    centre_zyx = np.asarray(centre_px, dtype=float)[::-1]
    middle = np.rint(centre_zyx).astype(int)
    ranges = [np.arange(m - radius, m + radius + 1) % box + 0 for m in middle + box // 2]
    steps = np.arange(-radius, radius + 1)
    distance = [steps + middle[a] - centre_zyx[a] for a in range(3)]
    inside = (distance[0][:, None, None] ** 2 + distance[1][None, :, None] ** 2
              + distance[2][None, None, :] ** 2) <= max_shift_px**2 + 1e-6
    return ranges, inside


def _subpixel(values: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """Parabolic sub-pixel offsets (z, y, x) of a peak inside a window of scores."""
    offsets = np.zeros(3)
    for axis in range(3):
        lo, hi = peak.copy(), peak.copy()
        lo[axis] -= 1
        hi[axis] += 1
        if lo[axis] < 0 or hi[axis] >= values.shape[axis]:
            continue
        left, right = values[tuple(lo)], values[tuple(hi)]
        if np.isfinite(left) and np.isfinite(right):
            offsets[axis] = parabolic_offset(left, values[tuple(peak)], right)
    return offsets


def residual_power(data_ft: np.ndarray, weight: np.ndarray, setup: ScoringSetup,
                   rotations: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Per-shell noise statistics at the given poses: (2, shells) = (Σ |D − a·W·S|² / W, Σ 1)
    over the sampled voxels (W > 0), full-spectrum weighted; ``a`` is each particle's
    least-squares amplitude of the reference. σ² per shell is the ratio."""
    box = setup.box_px
    shells = np.minimum(np.rint(np.linalg.norm(setup.k, axis=1)).astype(int), box // 2)
    sums = np.zeros((2, box // 2 + 1))
    centre = np.full(3, box // 2)
    for i in range(data_ft.shape[0]):
        data = data_ft[i].ravel()[setup.flat]
        w_data = weight[i].ravel()[setup.flat]
        reference = gridding.sample_rotated(setup.grid, rotations[i][None], setup.k,
                                            setup.pad)[0]
        model = reference * np.exp(-2j * np.pi * (setup.k @ (centre + shifts_px[i])) / box)
        sampled = w_data > 0
        norm = np.sum(setup.full_multiplicity * w_data * np.abs(reference) ** 2)
        scale = np.sum(setup.full_multiplicity * (np.conj(model) * data).real) / max(norm, 1e-30)
        residual = np.abs(data - scale * w_data * model) ** 2 / np.where(sampled, w_data, 1.0)
        sums[0] += np.bincount(shells, weights=setup.full_multiplicity * residual * sampled,
                               minlength=box // 2 + 1)[: box // 2 + 1]
        sums[1] += np.bincount(shells, weights=setup.full_multiplicity * sampled,
                               minlength=box // 2 + 1)[: box // 2 + 1]
    return sums
