"""The references particles are compared with: each half's map, without the particle's own
group (cross-validated within the half).

A particle's own tilt images are part of its half map; at few particles per half they pull
the map's slices towards the particle's current (wrong) geometry, and a refinement against
such a map finds only part of each error. Each half is therefore cut into ``groups`` groups;
a particle is compared with the map of the other groups of its own half (never with the
other half: the gold standard holds). ``groups = 1`` compares with the plain half map.

Maps are reconstructed from pseudo-subtomograms at the current geometry and CTF
(averaging.pseudo_subtomograms, averaging.reconstruction) at the particles' known rotations,
and weighted by the half maps' FSC, sqrt(2 FSC / (1 + FSC)) per shell, so the comparison uses
each frequency as far as the maps know it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoweave.algorithms.averaging import pseudo_subtomograms as pseudo
from tomoweave.algorithms.averaging.fsc import GoldStandardFsc, gold_standard_fsc
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.fourier import fsc_weighting, resolution_at_threshold, shell_filter
from tomoweave.algorithms.tilt_refinement.geometry import TiltGeometry

REGULARISER = 0.02  # smallest Wiener constant, fraction of each shell's mean weight


@dataclass
class SeriesParticles:
    """One tilt series and its particles, as the refinement sees them.

    images : (T, ny, nx) tilt images in contrast units, in the order of the geometry.
    geometry, optics : current alignment (with deformation) and per-tilt CTF.
    image_pixel_size_a : Å per pixel of ``images``.
    positions_a, rotations : (N, 3), (N, 3, 3) the particles (reference -> particle).
    half_sets : (N,) 1 or 2.
    defocus_offsets_a : (N,) per-particle defocus offsets (ctf.refine_ctf), optional.
    motion_a : (N, T, 2) per-particle motion beyond the geometry (motion.smooth_motion), Å.
    """

    images: np.ndarray
    geometry: TiltGeometry
    optics: pseudo.TiltSeriesOptics
    image_pixel_size_a: float
    positions_a: np.ndarray
    rotations: np.ndarray
    half_sets: np.ndarray
    defocus_offsets_a: np.ndarray | None = None
    motion_a: np.ndarray | None = None


@dataclass
class References:
    """half_maps {half: map}; group_maps {(half, group): map without that group};
    groups: per series, (N,) each particle's group; fsc of the half maps; pixel_size_a."""

    half_maps: dict
    group_maps: dict
    groups: list
    fsc: GoldStandardFsc
    pixel_size_a: float

    def band_limit_a(self, threshold: float = 0.05) -> float:
        """Resolution (Å) where the half maps' FSC falls below ``threshold``: the comparison's
        upper limit (the FSC weighting already fades the frequencies before it). Never below
        shell 4: maps without signal (FSC ~ 0) still give a band, whose FSC weights are ~0."""
        box = next(iter(self.half_maps.values())).shape[0]
        return min(resolution_at_threshold(self.fsc.corrected, box, self.pixel_size_a,
                                           threshold), box * self.pixel_size_a / 4.0)

    def for_particles(self, series_index: int, half_sets: np.ndarray
                      ) -> tuple[dict, np.ndarray]:
        """({label: map}, labels (N,)) of one series' particles for
        measure.compare_particles."""
        groups = self.groups[series_index]
        labels = np.array([f"{h}:{g}" for h, g in zip(half_sets, groups, strict=True)])
        maps = {f"{h}:{g}": m for (h, g), m in self.group_maps.items()}
        return maps, labels


def assign_groups(half_sets: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
    """Group 0 … groups-1 of every particle, balanced within each half (random order)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(len(half_sets), dtype=int)
    for half in np.unique(half_sets):
        members = rng.permutation(np.flatnonzero(half_sets == half))
        labels[members] = np.arange(len(members)) % groups
    return labels


def build_references(series: list[SeriesParticles], *, box_px: int, binning: float = 1.0,
                     groups: int = 1, mask: np.ndarray | None = None,
                     seed: int = 0) -> References:
    """Half maps and leave-one-group-out maps from the pseudo-subtomograms of all series.

    Parameters
    ----------
    series : the tilt series and their particles (SeriesParticles).
    box_px, binning : the maps' box and binning (pseudo_subtomogram).
    groups : groups per half (1: plain half maps).
    mask : soft mask for the FSC, optional.
    """
    builders: dict = {}
    labels_all = []
    pixel_out = None
    for index, item in enumerate(series):
        labels = assign_groups(np.asarray(item.half_sets), groups, seed + index)
        labels_all.append(labels)
        positions = np.asarray(item.positions_a, dtype=float).reshape(-1, 3)
        matrices, offsets = item.geometry.matrices(), item.geometry.offsets_a(positions)
        if item.motion_a is not None:
            offsets = offsets + item.motion_a
        for p, position in enumerate(positions):
            image = pseudo.pseudo_subtomogram(
                item.images, matrices, item.optics, item.image_pixel_size_a, position, box_px,
                binning=binning, offsets_a=offsets[p],
                defocus_offset_a=0.0 if item.defocus_offsets_a is None
                else item.defocus_offsets_a[p])
            pixel_out = image.pixel_size_a
            key = (np.asarray(item.half_sets)[p].item(), int(labels[p]))
            builder = builders.setdefault(key, Reconstructor(box_px))
            builder.add(image.data_ft[None], image.weight[None], item.rotations[p][None])
    return _maps(builders, labels_all, groups, box_px, pixel_out, mask)


def _maps(builders, labels_all, groups, box_px, pixel_out, mask) -> References:
    halves = sorted({h for h, _ in builders})
    half_maps = {}
    for half in halves:
        total = Reconstructor(box_px)
        for (h, _), builder in builders.items():
            if h == half:
                total.merge(builder)
        half_maps[half] = total.reconstruct(epsilon=REGULARISER)
    fsc = gold_standard_fsc(half_maps[halves[0]], half_maps[halves[-1]], pixel_out, mask)
    weighting = shell_filter(fsc_weighting(fsc.corrected), box_px)
    group_maps = {}
    for half, group in builders:
        if groups == 1:
            volume = half_maps[half]
        else:
            rest = Reconstructor(box_px)
            for (h, g), builder in builders.items():
                if h == half and g != group:
                    rest.merge(builder)
            volume = rest.reconstruct(epsilon=REGULARISER)
        group_maps[(half, group)] = _filtered(volume, weighting)
    return References(half_maps, group_maps, labels_all, fsc, float(pixel_out))


def _filtered(volume: np.ndarray, rfft_filter: np.ndarray) -> np.ndarray:
    import scipy.fft

    spectrum = scipy.fft.rfftn(volume, workers=-1) * rfft_filter
    return scipy.fft.irfftn(spectrum, volume.shape, workers=-1).astype(np.float32)
