"""3D classification of aligned particles: K references, hard or soft assignment, optional
local alignment; multi-reference alignment (MRA) is its hard, aligning case.

For a particle with premultiplied data D = W·S + noise (noise variance σ²(k)·W, W its CTF²
weight: zero in the missing wedge) the log-likelihood of class k at its best pose, maximised
over an amplitude scale, is

    L_ik = ½ · CC_ik² · Σ_k |D|² / (W σ²)        (over the voxels the particle sampled)

where CC_ik is averaging's wedge- and CTF-aware correlation (scoring.search_poses) of the
particle with reference k. Both factors compare the particle with a reference only where the
particle has information, so the missing wedge does not pull particles of one orientation
together. Soft assignment gives each particle the posterior P(k | D_i) ∝ π_k exp(L_ik)
(maximum likelihood, Scheres 2010); hard gives it to the best class. Each class is then
reconstructed from its particles (weighted by their posterior, each at the pose found for that
class) in gold-standard halves; its FSC (masked) filters each half's next reference, which is
also low-passed to the classification's resolution limit. A particle is scored against the
references of the *other* half: no reference holds the particle's own noise, so a partition
is kept only for what the particles share (a random start does not stick to itself). σ² per
shell is re-estimated from the residuals against the assigned class. Shifts are Å (x, y, z)
as in averaging.refine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging import sources
from tomoweave.algorithms.averaging.fsc import GoldStandardFsc, gold_standard_fsc
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.averaging.refine import data_noise_power
from tomoweave.algorithms.averaging.scoring import ScoringSetup, residual_power, search_poses
from tomoweave.algorithms.volumes import spherical_mask
from tomoweave.geometry.sampling import local_sampling
from tomoweave.geometry.symmetry import symmetry_operators

ASSIGNMENTS = ("soft", "hard")
SEEDINGS = ("pca", "random")
ALIGNMENTS = ("none", "local")
MIN_WEIGHT = 1e-4  # posteriors below this do not enter a class's reconstruction


@dataclass
class ClassifySettings:
    """Options of :func:`classify`; lengths in Å, angles in degrees."""

    classes: int
    particle_diameter_a: float
    resolution_a: float = 30.0  # highest resolution used by scores and references
    assignment: str = "soft"
    alignment: str = "none"
    angular_step_deg: float = 5.0
    local_range_deg: float = 10.0
    shift_range_a: float = 10.0
    max_iterations: int = 15
    min_changed_fraction: float = 0.005  # converged when fewer assignments change
    symmetry: str = "C1"
    batch_size: int = 64
    n_threads: int = 2
    seeding: str = "pca"  # classes start from k-means on wedge-compensated PCA, or at random
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seeding not in SEEDINGS:
            raise ValueError(f"seeding '{self.seeding}': expected one of {SEEDINGS}")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment '{self.assignment}': expected one of {ASSIGNMENTS}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment '{self.alignment}': expected one of {ALIGNMENTS}")
        if self.classes < 1:
            raise ValueError(f"classes {self.classes}: expected at least 1")


@dataclass
class ClassifyState:
    """Everything the next iteration needs; saved after each iteration (resume)."""

    references: np.ndarray  # (K, 2, B, B, B) per class, per half; filtered
    class_rotations: np.ndarray  # (N, K, 3, 3) each particle's pose for each class
    class_shifts_a: np.ndarray  # (N, K, 3)
    half_sets: np.ndarray  # (N,) 1 or 2
    responsibilities: np.ndarray  # (N, K) posterior (hard: one-hot)
    noise_power: np.ndarray  # (B // 2 + 1,) σ² per shell
    log_likelihood: np.ndarray  # (N, K)
    iteration: int = 0
    converged: bool = False
    history: list[dict] = field(default_factory=list)

    _ARRAYS = ("references", "class_rotations", "class_shifts_a", "half_sets",
               "responsibilities", "noise_power", "log_likelihood")

    @property
    def labels(self) -> np.ndarray:
        """(N,) the most probable class of each particle (0 … K-1)."""
        return np.argmax(self.responsibilities, axis=1)

    @property
    def rotations(self) -> np.ndarray:
        """(N, 3, 3) each particle's pose for its most probable class."""
        return self.class_rotations[np.arange(len(self.labels)), self.labels]

    @property
    def shifts_a(self) -> np.ndarray:
        return self.class_shifts_a[np.arange(len(self.labels)), self.labels]

    def to_checkpoint(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able values, arrays) for ``context.save_checkpoint``."""
        values = {k: v for k, v in self.__dict__.items() if k not in self._ARRAYS}
        return values, {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}

    @classmethod
    def from_checkpoint(cls, values: dict, arrays: dict[str, np.ndarray]) -> ClassifyState:
        return cls(**{**values, **{k: np.asarray(arrays[k]) for k in cls._ARRAYS}})


@dataclass
class ClassifyResult:
    """Final class maps at the full box and the state they come from."""

    state: ClassifyState
    maps: np.ndarray  # (K, B, B, B) both halves, FSC-weighted
    half_maps: np.ndarray  # (K, 2, B, B, B) unfiltered
    fsc: list[GoldStandardFsc | None]  # per class; None: a half had no particle
    occupancy: np.ndarray  # (K,) Σ posterior

    @property
    def labels(self) -> np.ndarray:
        return self.state.labels


ProgressCallback = Callable[[float, str], None]


def initial_state(source: sources.ImageSource, rotations: np.ndarray, shifts_a: np.ndarray,
                  half_sets: np.ndarray, settings: ClassifySettings,
                  references: np.ndarray | None = None) -> ClassifyState:
    """Starting state: given references (K, B, B, B), or the averages of K subsets.

    Without references the subsets are the k-means clusters of the particles' coordinates on
    the wedge-compensated principal components (``seeding="pca"``; see :mod:`.pca`), or random
    (``"random"``: with cross-half scoring, random subsets of a mixture tend to collapse into
    the class that happens to be larger).

    Parameters
    ----------
    source : the particles (premultiplied spectra, CTF² weights)
    rotations, shifts_a : (N, 3, 3), (N, 3) poses from a refinement (reference -> particle)
    half_sets : (N,) 1 or 2, the gold-standard halves
    references : (K, B, B, B), optional; random subsets seed the classes when absent
    """
    count, k = source.count, settings.classes
    rotations = np.asarray(rotations, dtype=float).reshape(count, 3, 3)
    shifts = np.asarray(shifts_a, dtype=float).reshape(count, 3)
    halves = np.asarray(half_sets).astype(np.int8).reshape(count)
    if np.any((halves != 1) & (halves != 2)):
        raise ValueError("half_sets: every particle needs 1 or 2")
    one_hot = np.eye(k)[_seed_labels(source, rotations, shifts, settings)]
    state = ClassifyState(
        references=np.zeros((k, 2) + (source.box_px,) * 3, np.float32),
        class_rotations=np.repeat(rotations[:, None], k, axis=1),
        class_shifts_a=np.repeat(shifts[:, None], k, axis=1), half_sets=halves,
        responsibilities=one_hot, noise_power=data_noise_power(source, settings.batch_size),
        log_likelihood=np.zeros((count, k)))
    if references is not None:
        references = np.asarray(references, dtype=np.float32)
        if references.shape != (k,) + (source.box_px,) * 3:
            raise ValueError(f"references {references.shape}: expected ({k}, "
                             f"{source.box_px}, {source.box_px}, {source.box_px})")
        pixel = source.pixel_size_a
        lowpassed = np.stack([_lowpassed(r, pixel, settings.resolution_a) for r in references])
        state.references = np.repeat(lowpassed[:, None], 2, axis=1)
        return state
    plan = _plan(source, settings)
    builders = _reconstruct_classes(source, state, plan, settings, one_hot)
    state.references, _ = _new_references(builders, plan, settings, source)
    return state


def _seed_labels(source: sources.ImageSource, rotations: np.ndarray, shifts_a: np.ndarray,
                 settings: ClassifySettings) -> np.ndarray:
    """(N,) starting class of every particle (see :func:`initial_state`)."""
    k = settings.classes
    if settings.seeding == "random" or k == 1:
        rng = np.random.default_rng(settings.seed)
        return rng.permutation(np.arange(source.count) % k)
    from tomoweave.algorithms.classification import clustering, pca

    spectra = pca.reference_frame_spectra(source, rotations, shifts_a,
                                          resolution_a=settings.resolution_a,
                                          batch_size=settings.batch_size)
    analysis = pca.principal_components(spectra, components=max(1, min(k - 1, 3)))
    return clustering.kmeans(analysis.coordinates, k, seed=settings.seed).labels


def classify(source: sources.ImageSource, state: ClassifyState, settings: ClassifySettings, *,
             on_iteration: Callable[[ClassifyState], None] | None = None,
             progress: ProgressCallback | None = None,
             log: Callable[[str], None] | None = None) -> ClassifyResult:
    """Iterate until assignments settle (or ``max_iterations``), then the final class maps.

    ``state`` comes from :func:`initial_state` or a checkpoint (resume continues after its
    last iteration); ``on_iteration(state)`` after each iteration, ``progress(fraction,
    message)`` during them, ``log`` one line per iteration.
    """
    say = log or (lambda message: None)
    while not state.converged and state.iteration < settings.max_iterations:
        started = time.perf_counter()
        record = classify_iteration(source, state, settings, progress)
        record["seconds"] = round(time.perf_counter() - started, 3)
        state.history.append(record)
        say(f"iteration {record['iteration']}: occupancy "
            f"{', '.join(f'{o:.1f}' for o in record['occupancy'])}; "
            f"{100 * record['changed_fraction']:.1f} % changed class, "
            f"{record['seconds']:.1f} s")
        if on_iteration is not None:
            on_iteration(state)
    return final_class_maps(source, state, settings, progress)


def multi_reference_alignment(source: sources.ImageSource, state: ClassifyState,
                              settings: ClassifySettings, **callbacks) -> ClassifyResult:
    """MRA: every particle aligned (locally) to every reference and given to the best one;
    :func:`classify` with hard assignment and local alignment."""
    from dataclasses import replace

    return classify(source, state, replace(settings, assignment="hard", alignment="local"),
                    **callbacks)


def classify_iteration(source: sources.ImageSource, state: ClassifyState,
                       settings: ClassifySettings,
                       progress: ProgressCallback | None = None) -> dict:
    """One expectation (scores, posteriors, poses) and maximisation (class maps) step."""
    plan = _plan(source, settings)
    before = state.labels.copy()
    prior = np.maximum(state.responsibilities.mean(axis=0), 1e-6)
    setups = [[_scoring_setup(r, state.noise_power, plan, settings) for r in pair]
              for pair in state.references]
    noise = np.zeros((2, source.box_px // 2 + 1))
    order = sources.batches(np.arange(source.count), settings.batch_size)
    for done, batch in enumerate(order):
        data, weight = source.batch(batch, plan["rec_box"])
        work = (fourier.crop_rfft(data, plan["work_box"]),
                fourier.crop_rfft(weight, plan["work_box"]))
        for half in (1, 2):  # scored against the other half's references
            members = np.flatnonzero(state.half_sets[batch] == half)
            if len(members) == 0:
                continue
            part = (work[0][members], work[1][members])
            other = [pair[2 - half] for pair in setups]
            _expectation(state, batch[members], part, other, prior, plan, settings)
            noise += _residuals(state, batch[members], part, other, plan, source.box_px)
        if progress is not None:
            progress((done + 1) / len(order), f"iteration {state.iteration + 1}: "
                     f"{min((done + 1) * settings.batch_size, source.count)} of "
                     f"{source.count} particles")
    measured = noise[1] > 0
    state.noise_power = np.where(measured, noise[0] / np.maximum(noise[1], 1),
                                 state.noise_power)
    builders = _reconstruct_classes(source, state, plan, settings, state.responsibilities)
    references, resolutions = _new_references(builders, plan, settings, source)
    occupancy = state.responsibilities.sum(axis=0)
    for k in range(settings.classes):  # a class without particles keeps its references
        if occupancy[k] >= 2.0:
            state.references[k] = references[k]
    changed = float(np.mean(state.labels != before))
    state.iteration += 1
    state.converged = state.iteration >= 2 and changed < settings.min_changed_fraction
    return {"iteration": state.iteration, "occupancy": occupancy.tolist(),
            "changed_fraction": changed,
            "resolution_a": [r if np.isfinite(r) else None for r in resolutions],
            "mean_log_likelihood": float(np.mean(np.max(state.log_likelihood, axis=1))),
            "working_box_px": int(plan["work_box"])}


def _plan(source: sources.ImageSource, settings: ClassifySettings) -> dict:
    """Working box of the scores and box of the reconstructions at the resolution limit."""
    box, pixel = source.box_px, source.pixel_size_a
    resolution = max(settings.resolution_a, 2.0 * pixel)
    radius = box * pixel / resolution
    work_box = _even_box(2 * np.ceil(radius + 2) + 4, box)
    rec_box = _even_box(2 * np.ceil(1.5 * radius + 4) + 2, box)
    return {"work_box": work_box, "rec_box": rec_box,
            "work_radius": min(radius, work_box // 2 - 1), "rec_radius": rec_box // 2 - 1,
            "work_pixel": pixel * box / work_box, "rec_pixel": pixel * box / rec_box,
            "resolution_a": resolution}


def _even_box(value: float, limit: int) -> int:
    size = int(np.ceil(value))
    return int(min(max(size + size % 2, 8), limit))


def _scoring_setup(reference: np.ndarray, noise_power: np.ndarray, plan: dict,
                   settings: ClassifySettings) -> ScoringSetup:
    box = plan["work_box"]
    cropped = fourier.fourier_crop(reference, box)
    radius_px = 0.5 * settings.particle_diameter_a / plan["work_pixel"]
    cropped = cropped * spherical_mask(box, min(radius_px, box / 2 - 2), 2.0)
    weight = 1.0 / np.maximum(noise_power[: box // 2 + 1], 1e-30)
    return ScoringSetup(cropped, plan["work_radius"], weight / weight.max())


def _whitened_norms(data: np.ndarray, weight: np.ndarray, setup: ScoringSetup,
                    noise_power: np.ndarray) -> np.ndarray:
    """Σ |D|² / (W σ²) over each particle's sampled voxels within the scoring radius (n,)."""
    d = data.reshape(len(data), -1)[:, setup.flat]
    w = weight.reshape(len(weight), -1)[:, setup.flat]
    sampled = w > 0
    terms = np.abs(d) ** 2 / np.where(sampled, w, 1.0) * sampled
    inverse = 1.0 / np.maximum(noise_power[np.minimum(setup.shells, len(noise_power) - 1)],
                               1e-30)
    return terms @ (setup.full_multiplicity * inverse)


def _expectation(state: ClassifyState, batch: np.ndarray, work: tuple, setups: list,
                 prior: np.ndarray, plan: dict, settings: ClassifySettings) -> None:
    """Scores of the batch against every class, posteriors and per-class poses."""
    data, weight = work
    pixel = plan["work_pixel"]
    norms = _whitened_norms(data, weight, setups[0], state.noise_power)
    local = (local_sampling(settings.angular_step_deg, settings.local_range_deg)
             if settings.alignment == "local" else np.eye(3)[None])
    max_shift = settings.shift_range_a / pixel if settings.alignment == "local" else 0.0
    scores = np.zeros((len(batch), settings.classes))
    for k, setup in enumerate(setups):
        current = state.class_rotations[batch, k]
        candidates = np.einsum("nij,mjk->nmik", current, local)
        found = search_poses(data, weight, setup, candidates,
                             shift_centres_px=state.class_shifts_a[batch, k] / pixel,
                             max_shift_px=max_shift, n_threads=settings.n_threads)
        scores[:, k] = found.scores
        if settings.alignment == "local":
            state.class_rotations[batch, k] = candidates[np.arange(len(batch)), found.index]
            state.class_shifts_a[batch, k] = found.shifts_px * pixel
    likelihood = 0.5 * np.clip(scores, 0.0, None) ** 2 * norms[:, None]
    state.log_likelihood[batch] = likelihood
    state.responsibilities[batch] = posteriors(likelihood, prior, settings.assignment)


def posteriors(log_likelihood: np.ndarray, prior: np.ndarray, assignment: str) -> np.ndarray:
    """(n, K) class probabilities from log-likelihoods (n, K) and class priors (K,):
    ``soft`` the normalised π_k exp(L_k), ``hard`` one-hot at the maximum."""
    values = log_likelihood + np.log(np.maximum(prior, 1e-300))[None]
    if assignment == "hard":
        return np.eye(values.shape[1])[np.argmax(values, axis=1)]
    values = np.exp(values - values.max(axis=1, keepdims=True))
    return values / values.sum(axis=1, keepdims=True)


def _residuals(state: ClassifyState, batch: np.ndarray, work: tuple, setups: list,
               plan: dict, full_box: int) -> np.ndarray:
    """Per-shell residual power and sampled-voxel counts against each particle's class."""
    data, weight = work
    out = np.zeros((2, full_box // 2 + 1))
    labels = state.labels[batch]
    for k, setup in enumerate(setups):
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            continue
        indices = batch[members]
        sums = residual_power(data[members], weight[members], setup,
                              state.class_rotations[indices, k],
                              state.class_shifts_a[indices, k] / plan["work_pixel"])
        out[:, : sums.shape[1]] += sums
    return out


def _reconstruct_classes(source: sources.ImageSource, state: ClassifyState, plan: dict,
                         settings: ClassifySettings, weights: np.ndarray,
                         box_px: int | None = None) -> list[dict[int, Reconstructor]]:
    """Per class, per half: a Reconstructor filled with the particles weighted by ``weights``
    (N, K), each at its pose for that class; at ``box_px`` (default the plan's)."""
    box = plan["rec_box"] if box_px is None else box_px
    radius = plan["rec_radius"] if box_px is None else None
    pixel = source.pixel_size_a * source.box_px / box
    builders = [{h: Reconstructor(box, radius) for h in (1, 2)} for _ in range(weights.shape[1])]
    for batch in sources.batches(np.arange(source.count), settings.batch_size):
        data, weight = source.batch(batch, box)
        for k in range(weights.shape[1]):
            for half in (1, 2):
                members = np.flatnonzero((state.half_sets[batch] == half)
                                         & (weights[batch, k] > MIN_WEIGHT))
                if len(members) == 0:
                    continue
                w = weights[batch[members], k].astype(np.float32)[:, None, None, None]
                indices = batch[members]
                builders[k][half].add(data[members] * w, weight[members] * w,
                                      state.class_rotations[indices, k],
                                      state.class_shifts_a[indices, k] / pixel)
    return builders


def _new_references(builders: list, plan: dict, settings: ClassifySettings,
                    source: sources.ImageSource) -> tuple[np.ndarray, list[float]]:
    """Each class's half maps weighted by their FSC, low-passed at the limit, padded to the
    full box: (K, 2, B, B, B), and each class's resolution (inf: a half was empty)."""
    references, resolutions = [], []
    operators = symmetry_operators(settings.symmetry)
    for halves in builders:
        maps, fsc, _ = _class_maps(halves, plan["rec_pixel"], settings, operators)
        resolution = fsc.resolution_a if fsc is not None else np.inf
        resolutions.append(float(resolution))
        limit = max(resolution, plan["resolution_a"])
        references.append([fourier.fourier_pad(_fsc_weighted(m, fsc, plan["rec_pixel"], limit,
                                                             halves=True), source.box_px)
                           for m in maps])
    return np.asarray(references, dtype=np.float32), resolutions


def _class_maps(halves: dict[int, Reconstructor], pixel_size_a: float,
                settings: ClassifySettings, operators: np.ndarray):
    """Half maps, their masked FSC (None if a half is empty) and the combined map."""
    box = halves[1].box_px
    maps = np.stack([halves[h].reconstruct(operators) for h in (1, 2)])
    fsc = None
    if halves[1].count and halves[2].count:
        radius = min(0.5 * settings.particle_diameter_a / pixel_size_a + 2, box / 2 - 3)
        fsc = gold_standard_fsc(maps[0], maps[1], pixel_size_a,
                                spherical_mask(box, radius, 3.0), seed=settings.seed)
    merged = Reconstructor(box, halves[1].radius_px)
    merged.merge(halves[1])
    merged.merge(halves[2])
    return maps, fsc, merged.reconstruct(operators)


def _fsc_weighted(volume: np.ndarray, fsc: GoldStandardFsc | None, pixel_size_a: float,
                  resolution_a: float, *, halves: bool = False) -> np.ndarray:
    """A class map weighted by sqrt(2 F / (1 + F)) and low-passed; F is the half maps' FSC for
    a half map (``halves``), else the combined map's 2 FSC / (1 + FSC)."""
    box = volume.shape[0]
    weights = fourier.lowpass_filter((box,) * 3, pixel_size_a, resolution_a * 0.9,
                                     edge_width=2.0 / box)
    if fsc is not None:
        corrected = np.clip(fsc.corrected, 0, 1)
        curve = corrected if halves else 2 * corrected / (1 + corrected)
        weights = weights * fourier.shell_filter(fourier.fsc_weighting(curve), box)
    return _apply(volume, weights)


def _lowpassed(volume: np.ndarray, pixel_size_a: float, resolution_a: float) -> np.ndarray:
    box = volume.shape[0]
    return _apply(volume, fourier.lowpass_filter((box,) * 3, pixel_size_a, resolution_a,
                                                 edge_width=2.0 / box))


def _apply(volume: np.ndarray, rfft_filter: np.ndarray) -> np.ndarray:
    import scipy.fft

    spectrum = scipy.fft.rfftn(volume, workers=-1) * rfft_filter
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)


def final_class_maps(source: sources.ImageSource, state: ClassifyState,
                     settings: ClassifySettings,
                     progress: ProgressCallback | None = None) -> ClassifyResult:
    """Half maps, FSC and FSC-weighted map of every class at the full box."""
    box, pixel = source.box_px, source.pixel_size_a
    plan = {"rec_box": box, "rec_radius": None}
    if progress is not None:
        progress(0.0, "final class maps")
    builders = _reconstruct_classes(source, state, plan, settings, state.responsibilities,
                                    box_px=box)
    operators = symmetry_operators(settings.symmetry)
    maps, halves, curves = [], [], []
    for k, pair in enumerate(builders):
        half_maps, fsc, combined = _class_maps(pair, pixel, settings, operators)
        resolution = fsc.resolution_a if fsc is not None else 2.0 * pixel
        maps.append(_fsc_weighted(combined, fsc, pixel, max(resolution, 2.0 * pixel)))
        halves.append(half_maps)
        curves.append(fsc)
        if progress is not None:
            progress((k + 1) / len(builders), "final class maps")
    return ClassifyResult(state, np.stack(maps), np.stack(halves), curves,
                          state.responsibilities.sum(axis=0))


def class_maps_from_labels(source: sources.ImageSource, rotations: np.ndarray,
                           shifts_a: np.ndarray, half_sets: np.ndarray, labels: np.ndarray,
                           settings: ClassifySettings) -> ClassifyResult:
    """Class maps (halves, FSC) of a given partition, e.g. clusters of principal components:
    ``labels`` (N,) in 0 … K-1, poses as in :func:`initial_state`."""
    count, k = source.count, settings.classes
    labels = np.asarray(labels, dtype=int).reshape(count)
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels span {labels.min()} … {labels.max()}: expected 0 … {k - 1}")
    rotations = np.asarray(rotations, dtype=float).reshape(count, 3, 3)
    shifts = np.asarray(shifts_a, dtype=float).reshape(count, 3)
    state = ClassifyState(
        references=np.zeros((k, 2, 1, 1, 1), np.float32),
        class_rotations=np.repeat(rotations[:, None], k, axis=1),
        class_shifts_a=np.repeat(shifts[:, None], k, axis=1),
        half_sets=np.asarray(half_sets).astype(np.int8).reshape(count),
        responsibilities=np.eye(k)[labels], noise_power=np.ones(source.box_px // 2 + 1),
        log_likelihood=np.zeros((count, k)))
    return final_class_maps(source, state, settings)
