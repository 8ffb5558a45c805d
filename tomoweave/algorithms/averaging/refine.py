"""Gold-standard auto-refinement of particle poses against two independent half references.

Each iteration, for the particles of each half set against that half's reference:

1. the working box is the smallest that holds the current resolution (Fourier cropping: the
   scores and the search cost follow the resolution, not the box);
2. a coarse search (global over the asymmetric unit on the first iteration without priors,
   else local around the current pose) and a fine search at half the step around its best;
   shifts are searched by FFT within a radius of the current shift;
3. each half is reconstructed from its own particles (CTF²-weighted, symmetrised), the FSC
   between the halves (soft-masked, corrected by phase randomisation) gives the resolution,
   and each half's next reference is its own map weighted by that FSC.

The angular step halves whenever the resolution stops improving, until it is finer than the
resolution needs (resolution / particle diameter); then the next stage of the binning schedule
starts, or the refinement ends. The halves never see each other's particles or maps; only the
FSC (a curve) passes between them.

Shifts are stored in Å (x, y, z): the particle's centre lies at its box centre + shift.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging import sources
from tomoweave.algorithms.averaging.fsc import automatic_mask, gold_standard_fsc
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.averaging.scoring import ScoringSetup, residual_power, search_poses
from tomoweave.algorithms.volumes import spherical_mask
from tomoweave.geometry.sampling import angular_sampling, local_sampling, orientation_errors_deg
from tomoweave.geometry.symmetry import symmetry_operators

SEARCH_MODES = ("global", "local")


@dataclass
class RefineSettings:
    """Options of :func:`refine`; lengths in Å, angles in degrees."""

    particle_diameter_a: float
    symmetry: str = "C1"
    initial_resolution_a: float = 40.0
    search: str = "local"
    angular_step_deg: float = 7.5
    local_range_deg: float = 20.0
    shift_range_a: float = 30.0
    max_iterations: int = 15
    binning_schedule: tuple[int, ...] = (1,)
    # the step is halved until it is below this fraction of resolution / diameter (radians)
    final_step_fraction: float = 0.5
    mask: np.ndarray | None = None
    batch_size: int = 64
    n_threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.search not in SEARCH_MODES:
            raise ValueError(f"search '{self.search}': expected one of {SEARCH_MODES}")
        if not self.binning_schedule or any(b < 1 for b in self.binning_schedule):
            raise ValueError(f"binning_schedule {self.binning_schedule}: expected factors ≥ 1")


@dataclass
class RefineState:
    """Everything the next iteration needs; saved after each iteration (resume)."""

    rotations: np.ndarray  # (N, 3, 3)
    shifts_a: np.ndarray  # (N, 3)
    half_sets: np.ndarray  # (N,) 1 or 2
    references: np.ndarray  # (2, B, B, B) the two half references, filtered
    resolution_a: float
    angular_step_deg: float
    noise_power: np.ndarray  # (B // 2 + 1,) σ² per shell
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iteration: int = 0
    stage: int = 0
    best_resolution_a: float = np.inf
    iterations_without_gain: int = 0
    converged: bool = False
    history: list[dict] = field(default_factory=list)
    fsc: dict | None = None

    _ARRAYS = ("rotations", "shifts_a", "half_sets", "references", "noise_power", "scores")

    def to_checkpoint(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able values, arrays) for ``context.save_checkpoint``."""
        values = {k: v for k, v in self.__dict__.items() if k not in self._ARRAYS}
        values["best_resolution_a"] = float(values["best_resolution_a"])
        return values, {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}

    @classmethod
    def from_checkpoint(cls, values: dict, arrays: dict[str, np.ndarray]) -> RefineState:
        return cls(**{**values, **{k: np.asarray(arrays[k]) for k in cls._ARRAYS}})


@dataclass
class RefineResult:
    """Final maps and poses."""

    state: RefineState
    half_maps: np.ndarray  # (2, B, B, B) unfiltered
    average: np.ndarray  # (B, B, B) both halves, FSC-weighted
    mask: np.ndarray
    fsc: object  # GoldStandardFsc


ProgressCallback = Callable[[float, str], None]


def initial_state(source: sources.ImageSource, reference: np.ndarray, half_sets: np.ndarray,
                  rotations: np.ndarray, shifts_a: np.ndarray,
                  settings: RefineSettings) -> RefineState:
    """Starting state: the reference low-passed and phase-randomised independently per half."""
    box = source.box_px
    if reference.shape != (box,) * 3:
        raise ValueError(f"reference {reference.shape} differs from the particle box {box}³")
    halves = np.asarray(half_sets).astype(np.int8)
    if not (np.any(halves == 1) and np.any(halves == 2)) or np.any((halves != 1) & (halves != 2)):
        raise ValueError("half_sets: every particle needs 1 or 2, and each half a particle")
    rng = np.random.default_rng(settings.seed)
    pixel = source.pixel_size_a
    resolution = max(settings.initial_resolution_a, 2.0 * pixel * settings.binning_schedule[0])
    references = np.stack([start_reference(reference, pixel, resolution, rng) for _ in (1, 2)])
    return RefineState(
        rotations=np.asarray(rotations, dtype=float).reshape(-1, 3, 3).copy(),
        shifts_a=np.asarray(shifts_a, dtype=float).reshape(-1, 3).copy(), half_sets=halves,
        references=references, resolution_a=resolution,
        angular_step_deg=settings.angular_step_deg,
        noise_power=data_noise_power(source, settings.batch_size),
        scores=np.zeros(source.count))


def start_reference(reference: np.ndarray, pixel_size_a: float, resolution_a: float,
                    rng: np.random.Generator) -> np.ndarray:
    """A half's first reference: phases random beyond ``resolution_a``, then a soft low-pass
    whose edge (resolution … 0.8 × resolution) keeps some of the randomised band."""
    randomised = fourier.phase_randomise(reference, pixel_size_a, resolution_a, rng)
    box = reference.shape[0]
    edge = pixel_size_a / (0.8 * resolution_a) - pixel_size_a / resolution_a
    lowpass = fourier.lowpass_filter((box,) * 3, pixel_size_a, resolution_a / 1.1,
                                     edge_width=max(edge, 1e-3))
    return _filtered(randomised, lowpass)


def data_noise_power(source: sources.ImageSource, batch_size: int) -> np.ndarray:
    """σ² per shell before any pose is known: the mean of |D|² / W over sampled voxels."""
    box = source.box_px
    totals = np.zeros(box // 2 + 1)
    counts = np.zeros(box // 2 + 1)
    for batch in sources.batches(np.arange(source.count), batch_size):
        data, weight = source.batch(batch, box)
        sampled = weight > 0
        totals += fourier.shell_sums(np.where(sampled, np.abs(data) ** 2 / np.where(
            sampled, weight, 1.0), 0.0), box).sum(axis=0)
        counts += fourier.shell_sums(sampled.astype(np.float32), box).sum(axis=0)
    return np.where(counts > 0, totals / np.maximum(counts, 1), 1.0)


def refine(source: sources.ImageSource, state: RefineState, settings: RefineSettings, *,
           on_iteration: Callable[[RefineState], None] | None = None,
           progress: ProgressCallback | None = None,
           log: Callable[[str], None] | None = None) -> RefineResult:
    """Iterate until converged (or ``max_iterations``), then make the final maps.

    ``state`` comes from :func:`initial_state` or from a checkpoint (resume: it continues
    with the iteration after the last one recorded). ``on_iteration`` is called with the
    state after each iteration (to checkpoint it); ``progress(fraction, message)`` during
    the iterations; ``log`` gets one line per iteration.
    """
    say = log or (lambda message: None)
    while not state.converged and state.iteration < settings.max_iterations:
        started = time.perf_counter()
        record = refine_iteration(source, state, settings, progress)
        record["seconds"] = round(time.perf_counter() - started, 3)
        state.history.append(record)
        say(_iteration_line(record))
        if on_iteration is not None:
            on_iteration(state)
    return final_maps(source, state, settings, progress)


def _iteration_line(record: dict) -> str:
    return (f"iteration {record['iteration']}: {record['resolution_a']:.1f} Å, step "
            f"{record['angular_step_deg']:g}°, mean angular change "
            f"{record['mean_angular_change_deg']:.2f}°, mean shift change "
            f"{record['mean_shift_change_a']:.2f} Å, box {record['working_box_px']} px, "
            f"{record['seconds']:.1f} s")


def refine_iteration(source: sources.ImageSource, state: RefineState, settings: RefineSettings,
                     progress: ProgressCallback | None = None) -> dict:
    """One expectation-maximisation step on both halves; updates ``state`` in place."""
    plan = _iteration_plan(source, state, settings)
    before_rotations, before_shifts = state.rotations.copy(), state.shifts_a.copy()
    builders = {h: Reconstructor(plan["rec_box"], plan["rec_radius"]) for h in (1, 2)}
    setups = {h: _scoring_setup(state, h, plan, settings, source.pixel_size_a) for h in (1, 2)}
    noise = np.zeros((2, source.box_px // 2 + 1))
    order = sources.batches(np.arange(source.count), settings.batch_size)
    for done, batch in enumerate(order):
        data, weight = source.batch(batch, plan["rec_box"])
        work_data = fourier.crop_rfft(data, plan["work_box"])
        work_weight = fourier.crop_rfft(weight, plan["work_box"])
        for half in (1, 2):
            members = np.flatnonzero(state.half_sets[batch] == half)
            if len(members) == 0:
                continue
            indices = batch[members]
            _search(state, indices, work_data[members], work_weight[members], setups[half],
                    plan, settings)
            noise += _residuals(state, indices, work_data[members], work_weight[members],
                                setups[half], plan, source.box_px)
            builders[half].add(data[members], weight[members], state.rotations[indices],
                               state.shifts_a[indices] / plan["rec_pixel"])
        if progress is not None:
            progress((done + 1) / len(order), f"iteration {state.iteration + 1}: "
                     f"{min((done + 1) * settings.batch_size, source.count)} of "
                     f"{source.count} particles")
    _update_noise(state, noise)
    return _maximisation(state, builders, plan, settings, source, before_rotations,
                         before_shifts)


def _iteration_plan(source: sources.ImageSource, state: RefineState,
                    settings: RefineSettings) -> dict:
    """Working box (search), reconstruction box and radii for the current resolution."""
    box, pixel = source.box_px, source.pixel_size_a
    binning = settings.binning_schedule[min(state.stage, len(settings.binning_schedule) - 1)]
    stage_box = _even(box / binning, box)
    radius = box * pixel / state.resolution_a  # current resolution, Fourier voxels of the box
    work_box = _even(2 * np.ceil(radius + 2) + 4, stage_box)
    rec_box = _even(2 * np.ceil(1.5 * radius + 4) + 2, stage_box)
    first = state.iteration == 0
    fine_step = state.angular_step_deg
    return {"work_box": work_box, "rec_box": rec_box,
            "work_radius": min(radius + 2, work_box // 2 - 1),
            "rec_radius": rec_box // 2 - 1,
            "work_pixel": pixel * box / work_box, "rec_pixel": pixel * box / rec_box,
            "global": first and settings.search == "global",
            "coarse_step": 2 * fine_step,
            "coarse_range": settings.local_range_deg if first else 2 * fine_step,
            "fine_step": fine_step,
            # later iterations move the shifts little: three working pixels around them
            "shift_range_a": settings.shift_range_a if first else
            min(settings.shift_range_a, 3 * pixel * box / work_box)}


def _even(value: float, limit: int) -> int:
    size = int(np.ceil(value))
    size += size % 2
    return int(min(max(size, 8), limit))


def _scoring_setup(state: RefineState, half: int, plan: dict, settings: RefineSettings,
                   pixel_size_a: float) -> ScoringSetup:
    box = plan["work_box"]
    reference = fourier.fourier_crop(state.references[half - 1], box)
    radius_px = 0.5 * settings.particle_diameter_a / plan["work_pixel"]
    reference = reference * spherical_mask(box, min(radius_px, box / 2 - 2), 2.0)
    shells = box // 2 + 1
    noise_weight = 1.0 / np.maximum(state.noise_power[:shells], 1e-30)
    return ScoringSetup(reference, plan["work_radius"], noise_weight / noise_weight.max())


def _search(state: RefineState, indices: np.ndarray, data: np.ndarray, weight: np.ndarray,
            setup: ScoringSetup, plan: dict, settings: RefineSettings) -> None:
    """Coarse then fine pose search of some particles; writes the new poses into ``state``."""
    pixel = plan["work_pixel"]
    centres = state.shifts_a[indices] / pixel
    if plan["global"]:
        candidates = angular_sampling(plan["coarse_step"], settings.symmetry)
    else:
        local = local_sampling(plan["coarse_step"], plan["coarse_range"])
        candidates = np.einsum("nij,mjk->nmik", state.rotations[indices], local)
    coarse = search_poses(data, weight, setup, candidates, shift_centres_px=centres,
                          max_shift_px=plan["shift_range_a"] / pixel,
                          n_threads=settings.n_threads)
    best = candidates[coarse.index] if plan["global"] else \
        candidates[np.arange(len(indices)), coarse.index]
    local = local_sampling(plan["fine_step"], plan["coarse_step"])
    candidates = np.einsum("nij,mjk->nmik", best, local)
    fine = search_poses(data, weight, setup, candidates, shift_centres_px=coarse.shifts_px,
                        max_shift_px=1.5, n_threads=settings.n_threads)
    state.rotations[indices] = candidates[np.arange(len(indices)), fine.index]
    state.shifts_a[indices] = fine.shifts_px * pixel
    state.scores[indices] = fine.scores


def _residuals(state: RefineState, indices: np.ndarray, data: np.ndarray, weight: np.ndarray,
               setup: ScoringSetup, plan: dict, full_box: int) -> np.ndarray:
    """Per-shell sums of the residual power and of the sampled voxels (2, full_box // 2 + 1)."""
    sums = residual_power(data, weight, setup, state.rotations[indices],
                          state.shifts_a[indices] / plan["work_pixel"])
    out = np.zeros((2, full_box // 2 + 1))
    out[:, : sums.shape[1]] = sums
    return out


def _update_noise(state: RefineState, noise: np.ndarray) -> None:
    """σ² per shell from the residuals where measured; beyond, the previous estimate."""
    measured = noise[1] > 0
    state.noise_power = np.where(measured, noise[0] / np.maximum(noise[1], 1),
                                 state.noise_power)


def _maximisation(state: RefineState, builders: dict, plan: dict, settings: RefineSettings,
                  source: sources.ImageSource, before_rotations: np.ndarray,
                  before_shifts: np.ndarray) -> dict:
    """Half maps, FSC, new references, schedule; returns the iteration's record."""
    operators = symmetry_operators(settings.symmetry)
    maps = [builders[h].reconstruct(operators) for h in (1, 2)]
    rec_box, rec_pixel = plan["rec_box"], plan["rec_pixel"]
    mask = spherical_mask(rec_box, min(0.5 * settings.particle_diameter_a / rec_pixel + 2,
                                       rec_box / 2 - 3), 3.0)
    fsc = gold_standard_fsc(maps[0], maps[1], rec_pixel, mask, seed=settings.seed)
    resolution = max(fsc.resolution_a, 2 * rec_pixel)
    state.references = np.stack([
        fourier.fourier_pad(_fsc_filtered(m, fsc.corrected, rec_pixel, resolution),
                            source.box_px) for m in maps])
    angular = orientation_errors_deg(before_rotations, state.rotations, settings.symmetry)
    shift_change = np.linalg.norm(state.shifts_a - before_shifts, axis=1)
    state.iteration += 1
    record = {"iteration": state.iteration, "resolution_a": float(resolution),
              "angular_step_deg": float(state.angular_step_deg),
              "mean_angular_change_deg": float(np.mean(angular)),
              "mean_shift_change_a": float(np.mean(shift_change)),
              "mean_score": float(np.mean(state.scores)),
              "working_box_px": int(plan["work_box"]), "stage": int(state.stage),
              "particles": int(source.count)}
    _advance_schedule(state, resolution, float(np.mean(angular)), plan, settings, source)
    state.fsc = {"shells": fsc.corrected.tolist(), "box_px": rec_box, "pixel_size_a": rec_pixel}
    return record


def _fsc_filtered(volume: np.ndarray, fsc: np.ndarray, pixel_size_a: float,
                  resolution_a: float) -> np.ndarray:
    """A half map weighted by sqrt(2 FSC / (1 + FSC)) and low-passed just past ``resolution_a``."""
    box = volume.shape[0]
    weights = fourier.shell_filter(fourier.fsc_weighting(fsc), box)
    weights *= fourier.lowpass_filter((box,) * 3, pixel_size_a, resolution_a * 0.9,
                                      edge_width=2.0 / box)
    return _filtered(volume, weights)


def _filtered(volume: np.ndarray, rfft_filter: np.ndarray) -> np.ndarray:
    import scipy.fft

    spectrum = scipy.fft.rfftn(volume, workers=-1) * rfft_filter
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)


def _advance_schedule(state: RefineState, resolution_a: float, angular_change_deg: float,
                      plan: dict, settings: RefineSettings, source: sources.ImageSource) -> None:
    """RELION-like: halve the step when the resolution stalls, until the resolution's step."""
    shell = source.box_px * source.pixel_size_a
    gained = shell / resolution_a - shell / state.best_resolution_a >= 0.5
    state.iterations_without_gain = 0 if gained else state.iterations_without_gain + 1
    state.best_resolution_a = min(state.best_resolution_a, resolution_a)
    state.resolution_a = resolution_a
    target = settings.final_step_fraction * needed_step_deg(resolution_a,
                                                            settings.particle_diameter_a)
    if state.iterations_without_gain >= 1 and state.angular_step_deg > target:
        state.angular_step_deg = max(state.angular_step_deg / 2, 0.25 * target)
        state.iterations_without_gain = 0
        return
    stalled = state.iterations_without_gain >= 2 or (
        state.iterations_without_gain >= 1 and angular_change_deg < state.angular_step_deg)
    if stalled and state.angular_step_deg <= target:
        if state.stage + 1 < len(settings.binning_schedule):
            state.stage += 1
            state.iterations_without_gain = 0
        else:
            state.converged = True


def needed_step_deg(resolution_a: float, diameter_a: float) -> float:
    """The angular step that moves the particle's rim by about the resolution, degrees."""
    return float(np.degrees(resolution_a / diameter_a))


def final_maps(source: sources.ImageSource, state: RefineState, settings: RefineSettings,
               progress: ProgressCallback | None = None) -> RefineResult:
    """Half maps at the full box from the final poses, masked FSC and the combined map."""
    box, pixel = source.box_px, source.pixel_size_a
    builders = {h: Reconstructor(box) for h in (1, 2)}
    order = sources.batches(np.arange(source.count), settings.batch_size)
    for done, batch in enumerate(order):
        data, weight = source.batch(batch, box)
        for half in (1, 2):
            members = np.flatnonzero(state.half_sets[batch] == half)
            if len(members):
                indices = batch[members]
                builders[half].add(data[members], weight[members], state.rotations[indices],
                                   state.shifts_a[indices] / pixel)
        if progress is not None:
            progress((done + 1) / len(order), "final reconstruction")
    operators = symmetry_operators(settings.symmetry)
    half_maps = np.stack([builders[h].reconstruct(operators) for h in (1, 2)])
    mask = settings.mask if settings.mask is not None else automatic_mask(
        half_maps.sum(axis=0), pixel, settings.particle_diameter_a,
        resolution_a=state.resolution_a)
    fsc = gold_standard_fsc(half_maps[0], half_maps[1], pixel, mask, seed=settings.seed)
    builders[1].merge(builders[2])
    combined = builders[1].reconstruct(operators)
    full_fsc = 2 * np.clip(fsc.corrected, 0, 1) / (1 + np.clip(fsc.corrected, 0, 1))
    average = _fsc_filtered(combined, full_fsc, pixel, fsc.resolution_a)
    state.resolution_a = fsc.resolution_a
    return RefineResult(state, half_maps, average, mask, fsc)
