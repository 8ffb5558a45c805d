"""The "SPA leap": subtomograms projected along Z, 2D classification, pruned particle set.

Each particle's premultiplied spectrum D and CTF² weight W are projected along Z (the central
plane kz = 0 for the whole box; for a central slab, D transformed back along Z and summed over
the slab), which gives a 2D particle with data D₂ = W₂ S₂ (central-slice theorem). Its
Wiener-corrected image F⁻¹[D₂ / (W₂ + ε·mean W₂)], low-passed, enters a reference-free 2D
classification with in-plane alignment: K classes seeded from random subsets, every image
compared with every class at every in-plane rotation and integer shift (normalised
cross-correlation inside a disc; one matrix product), assigned to the best, classes re-averaged from
their aligned members. Classes whose average shows a particle (density at the centre well
above the spread of the background), or most of whose members correlate well with it, are
kept; within them, particles whose correlation with their class average falls in the low
population (junk, when the correlations split in two) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage

from tomoweave.algorithms.volumes import spherical_mask


@dataclass
class Classes2D:
    """Result of :func:`classify_2d`.

    labels : (N,) class of each image; angles_deg : (N,) in-plane rotation that turns the
    class average onto the image; shifts_px : (N, 2) (x, y) of the image's content;
    averages : (K, b, b) class averages (images aligned to them); scores : (N,) CC;
    history : per iteration, class sizes and the fraction of images that changed class.
    """

    labels: np.ndarray
    angles_deg: np.ndarray
    shifts_px: np.ndarray
    averages: np.ndarray
    scores: np.ndarray
    history: list[dict] = field(default_factory=list)


def project_along_z(data_ft: np.ndarray, weight: np.ndarray, *, slab_px: int | None = None,
                    pixel_size_a: float, resolution_a: float = 25.0,
                    wiener: float = 0.1) -> np.ndarray:
    """2D images (N, B, B), float32, of particles projected along Z, CTF-corrected.

    Parameters
    ----------
    data_ft, weight : (N, B, B, B//2+1) premultiplied spectra and CTF² weights (ParticleImages)
    slab_px : int, optional
        Thickness of the central slab that is projected (default: the whole box).
    pixel_size_a : float
    resolution_a : float
        Low-pass of the images, Å.
    wiener : float
        ε of the Wiener correction, as a fraction of the mean 2D weight.
    """
    box = data_ft.shape[1]
    if slab_px is None or slab_px >= box:
        planes = data_ft[:, 0]  # kz = 0: the projection of the whole box
    else:
        along_z = scipy.fft.ifft(data_ft, axis=1, workers=-1)
        centre = box // 2
        rows = (np.arange(centre - slab_px // 2, centre - slab_px // 2 + slab_px)) % box
        # the box centre (index B // 2) is the particle: sum the slab around it
        planes = along_z[:, rows].sum(axis=1) * box / slab_px
    weights = weight[:, 0]
    mean = np.array([w[w > 0].mean() if np.any(w > 0) else 1.0 for w in weights])
    corrected = planes / (weights + wiener * mean[:, None, None])
    fy = np.fft.fftfreq(box)[:, None]
    fx = np.fft.rfftfreq(box)[None, :]
    cutoff = pixel_size_a / resolution_a
    radius = np.sqrt(fx * fx + fy * fy)
    lowpass = 0.5 * (1 + np.cos(np.pi * np.clip((radius - 0.8 * cutoff) / (0.2 * cutoff),
                                                0, 1)))
    images = scipy.fft.irfft2(corrected * lowpass, s=(box, box), workers=-1)
    return images.astype(np.float32)


def classify_2d(images: np.ndarray, classes: int, *, mask_radius_px: float,
                angular_step_deg: float = 10.0, max_shift_px: float = 3.0,
                iterations: int = 10, seed: int = 0) -> Classes2D:
    """Reference-free 2D classification with in-plane alignment (see module docstring).

    Parameters
    ----------
    images : (N, b, b) float, particle at index b // 2
    classes : int, K
    mask_radius_px : float, radius of the disc the images are compared in
    angular_step_deg, max_shift_px : the in-plane search
    iterations : int, at most; stops when no image changes class
    seed : int
    """
    images = np.asarray(images, dtype=np.float32)
    count, box, _ = images.shape
    disc = spherical_mask(box, mask_radius_px, 2.0)[box // 2]  # central plane of a sphere
    offsets = _shift_offsets(max_shift_px)
    shifted = _shifted_stack(images, disc, offsets)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % classes)
    angles = np.zeros(count)
    shifts = np.zeros((count, 2))
    averages = _averages(images, labels, angles, shifts, classes, disc)
    history: list[dict] = []
    scores = np.zeros(count)
    for _ in range(iterations):
        before = labels.copy()
        labels, angles, shifts, scores = _assign(shifted, offsets, averages, disc,
                                                 angular_step_deg)
        averages = _averages(images, labels, angles, shifts, classes, disc, previous=averages)
        changed = float(np.mean(labels != before))
        history.append({"sizes": np.bincount(labels, minlength=classes).tolist(),
                        "changed_fraction": changed})
        if changed == 0.0:
            break
    return Classes2D(labels, angles, shifts, averages, scores, history)


def _normalised(images: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """Images with zero mean and unit norm inside the disc, zero outside."""
    inside = disc > 0.5
    centred = images - np.array([im[inside].mean() for im in images])[:, None, None]
    centred = centred * disc
    norms = np.sqrt(np.sum(centred**2, axis=(1, 2)))
    return (centred / np.maximum(norms, 1e-30)[:, None, None]).astype(np.float32)


def _shift_offsets(max_shift_px: float) -> np.ndarray:
    """Integer shifts (T, 2) (x, y) within ``max_shift_px``, the zero shift first."""
    r = int(np.floor(max_shift_px + 1e-9))
    steps = np.arange(-r, r + 1)
    grid = np.stack(np.meshgrid(steps, steps, indexing="xy"), -1).reshape(-1, 2)
    grid = grid[np.hypot(grid[:, 0], grid[:, 1]) <= max_shift_px + 1e-6]
    return grid[np.argsort(np.hypot(grid[:, 0], grid[:, 1]), kind="stable")]


def _shifted_stack(images: np.ndarray, disc: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(T, N, b²): every image moved back by every candidate shift, normalised in the disc."""
    return np.stack([_normalised(np.roll(images, (-dy, -dx), axis=(1, 2)), disc).reshape(
        len(images), -1) for dx, dy in offsets])


def _assign(shifted: np.ndarray, offsets: np.ndarray, averages: np.ndarray, disc: np.ndarray,
            step_deg: float):
    """Best class, in-plane angle and shift of every image: normalised CC of each image moved
    back by each shift with each class average turned by each angle (one matrix product)."""
    angles = np.arange(0.0, 360.0, step_deg)
    box = averages.shape[1]
    references = np.concatenate([_normalised(np.stack([
        ndimage.rotate(average, a, reshape=False, order=1) for a in angles]), disc).reshape(
        len(angles), box * box) for average in averages])  # (K·M, b²)
    count = shifted.shape[1]
    values = (shifted.reshape(-1, box * box) @ references.T).reshape(
        len(offsets), count, len(averages), len(angles))
    values = values.transpose(1, 0, 2, 3).reshape(count, -1)
    where = np.argmax(values, axis=1)
    shift_index, label, angle_index = np.unravel_index(
        where, (len(offsets), len(averages), len(angles)))
    return (label, angles[angle_index], offsets[shift_index].astype(float),
            values[np.arange(count), where])


def _averages(images, labels, angles, shifts, classes, disc, previous=None) -> np.ndarray:
    """Class averages of the members turned back onto the class frame (empty: the previous)."""
    count, box, _ = images.shape
    sums = np.zeros((classes, box, box))
    for i in range(count):
        back = np.roll(images[i], (-int(shifts[i, 1]), -int(shifts[i, 0])), axis=(0, 1))
        sums[labels[i]] += ndimage.rotate(back, -angles[i], reshape=False, order=1)
    sizes = np.bincount(labels, minlength=classes)
    out = sums / np.maximum(sizes, 1)[:, None, None]
    if previous is not None:
        out[sizes == 0] = previous[sizes == 0]
    return out.astype(np.float32)


def particle_scores(averages: np.ndarray, *, particle_radius_px: float) -> np.ndarray:
    """How much each class average looks like a centred particle: the mean density inside the
    particle's disc above the background ring's mean, in units of the ring's spread (K,)."""
    box = averages.shape[1]
    y, x = np.indices((box, box)) - box // 2
    radius = np.hypot(x, y)
    inside = radius <= particle_radius_px
    ring = (radius > particle_radius_px + 2) & (radius <= box // 2 - 1)
    out = []
    for average in averages:
        background = average[ring]
        out.append((average[inside].mean() - background.mean())
                   / max(float(background.std()), 1e-30))
    return np.array(out)


def correlation_cut(scores: np.ndarray, *, separation: float = 3.0) -> float:
    """A cut between two populations of per-particle correlations with their class average
    (particles vs junk), or -inf when there is only one: the midpoint of a 1D two-means split,
    used when the centres lie ``separation`` pooled standard deviations apart or more."""
    values = np.sort(np.asarray(scores, dtype=float))
    if len(values) < 4:
        return -np.inf
    # the best 1D two-means split is at one of the sorted positions
    costs = [np.var(values[:i]) * i + np.var(values[i:]) * (len(values) - i)
             for i in range(2, len(values) - 1)]
    split = 2 + int(np.argmin(costs))
    low, high = values[:split], values[split:]
    pooled = np.sqrt((np.var(low) * len(low) + np.var(high) * len(high)) / len(values))
    if high.mean() - low.mean() < separation * max(pooled, 1e-12):
        return -np.inf
    return float(0.5 * (low.mean() + high.mean()))


def select_classes(class_scores: np.ndarray, *, threshold: float = 3.0,
                   labels: np.ndarray | None = None, scores: np.ndarray | None = None,
                   cut: float = -np.inf) -> np.ndarray:
    """Indices of the classes that look like particles: particle score ≥ ``threshold``, or
    (given the images' ``labels``, correlations ``scores`` and a ``cut``) most of their
    members correlate with their average above the cut."""
    chosen = set(np.flatnonzero(np.asarray(class_scores) >= threshold).tolist())
    if labels is not None and scores is not None and np.isfinite(cut):
        for k in range(len(class_scores)):
            members = np.asarray(scores)[np.asarray(labels) == k]
            if len(members) and np.median(members) >= cut:
                chosen.add(k)
    return np.array(sorted(chosen), dtype=int)


def kept_particles(labels: np.ndarray, selected: np.ndarray, *,
                   scores: np.ndarray | None = None, cut: float = -np.inf) -> np.ndarray:
    """(N,) bool: the particles in the selected classes (whose correlation with their class
    average reaches ``cut``, when given)."""
    kept = np.isin(np.asarray(labels), np.asarray(selected))
    if scores is not None:
        kept &= np.asarray(scores) >= cut
    return kept
