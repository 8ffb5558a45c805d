"""One refinement cycle of a tilt series: geometry, then CTF, then (optionally) motion, each
against the half references rebuilt from the current state, and the resolution before and
after (RELION 4's tomo refinement cycle, without the pose refinement: ``average.refine``
does that between cycles).

The geometry is refined in ``geometry_rounds`` rounds; each round rebuilds the references
from the current geometry, so errors the references had absorbed (their slices carry the
same per-tilt errors as the particles) shrink round by round. Gold standard throughout: every
particle meets only references of its own half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from tomoweave.algorithms.tilt_refinement.ctf import CtfRefinement, refine_ctf
from tomoweave.algorithms.tilt_refinement.geometry import fit_geometry
from tomoweave.algorithms.tilt_refinement.measure import compare_particles, measure_displacements
from tomoweave.algorithms.tilt_refinement.motion import smooth_motion
from tomoweave.algorithms.tilt_refinement.references import SeriesParticles, build_references


@dataclass
class CycleSettings:
    """Options of :func:`refine_cycle`; lengths in Å, boxes in px."""

    box_px: int = 40
    binning: float = 2.0
    groups: int = 1
    geometry: bool = True
    geometry_rounds: int = 3
    parameters: tuple[str, ...] = ("shift_x_a", "shift_y_a", "z_rot_deg", "magnification")
    shared_tilt_offset: bool = True
    deformation_sigma_a: float = 4.0
    search_radius_a: float = 32.0
    ctf: bool = True
    ctf_box_px: int = 80
    ctf_binning: float = 1.0
    ctf_resolution_a: float | None = None
    astigmatism: bool = False
    particle_defocus: bool = True
    motion: bool = False
    motion_sigma_a: float = 4.0
    motion_length_a: float = 300.0


@dataclass
class CycleResult:
    """The refined series (SeriesParticles with new geometry, optics, particle defocus and
    motion), the resolution before and after, and what each step changed.

    history : one dict per step (step, resolution_a of the references it used, ...).
    ctf : per series, the CtfRefinement (None without the CTF step).
    """

    series: list[SeriesParticles]
    resolution_before_a: float
    resolution_after_a: float
    ctf: list[CtfRefinement | None] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


def refine_cycle(series: list[SeriesParticles], settings: CycleSettings, *,
                 progress: Callable[[float, str], None] | None = None) -> CycleResult:
    """Refine the geometry, CTF and particle motion of tilt series against their particles.

    References are the half maps of all series' particles (each half its own); each series'
    per-tilt parameters are fitted to its own particles.

    Parameters
    ----------
    series : the series and their particles (references.SeriesParticles); not modified.
    settings : CycleSettings.
    progress : callback(fraction, message), optional.
    """
    report = progress or (lambda fraction, message: None)
    run = _Run([replace(item, geometry=item.geometry.copy()) for item in series], settings)
    refs = run.references(settings.box_px, settings.binning)
    before = refs.fsc.resolution_a
    rounds = settings.geometry_rounds if settings.geometry else 0
    steps = rounds + 2
    for index in range(rounds):
        report(index / steps, f"geometry round {index + 1}: references at "
               f"{refs.fsc.resolution_a:.1f} Å")
        refs = run.geometry_round(refs, index)
    ctf_results: list = [None] * len(series)
    if settings.ctf:
        report((steps - 2) / steps, "CTF")
        ctf_results, refs = run.ctf_step()
    if settings.motion:
        report((steps - 1) / steps, "particle motion")
        refs = run.motion_step(refs)
    report(1.0, f"resolution {before:.1f} Å -> {refs.fsc.resolution_a:.1f} Å")
    return CycleResult(run.series, float(before), float(refs.fsc.resolution_a), ctf_results,
                       run.history)


class _Run:
    """The state of one cycle and its steps (each returns the references rebuilt after it)."""

    def __init__(self, series: list[SeriesParticles], settings: CycleSettings):
        self.series, self.settings = series, settings
        self.history: list[dict] = []

    def references(self, box, binning):
        return build_references(self.series, box_px=box, binning=binning,
                                groups=self.settings.groups)

    def _comparison(self, refs, index, box, binning, resolution_a):
        item = self.series[index]
        maps, labels = refs.for_particles(index, item.half_sets)
        return compare_particles(item.images, item.geometry, item.image_pixel_size_a,
                                 item.positions_a, item.rotations, labels, maps, box_px=box,
                                 binning=binning, resolution_a=resolution_a,
                                 motion_a=item.motion_a)

    def _displacements(self, refs, index, narrow):
        settings = self.settings
        comparison = self._comparison(refs, index, settings.box_px, settings.binning,
                                      refs.band_limit_a())
        radius_px = settings.search_radius_a / comparison.setup.pixel_size_a
        return measure_displacements(comparison, self.series[index].optics,
                                     search_radius_px=radius_px,
                                     particle_radius_px=radius_px / (5.0 if narrow else 2.5),
                                     defocus_offsets_a=self.series[index].defocus_offsets_a)

    def geometry_round(self, refs, round_index: int):
        settings = self.settings
        for index, item in enumerate(self.series):
            found = self._displacements(refs, index, narrow=round_index > 0)
            item.geometry, fit = fit_geometry(
                item.geometry, item.positions_a, found.displacements_a, found.information,
                names=settings.parameters, shared_tilt_offset=settings.shared_tilt_offset,
                deformation_sigma_a=settings.deformation_sigma_a)
            self.history.append({"step": "geometry", "round": round_index + 1,
                                 "series": index, "resolution_a": float(refs.fsc.resolution_a),
                                 "tilt_offset_deg": fit.tilt_offset_deg,
                                 "rms_shift_change_a": float(np.sqrt(2 * np.mean(
                                     fit.changes[:, :2] ** 2)))})
        return self.references(settings.box_px, settings.binning)

    def ctf_step(self):
        settings = self.settings
        ctf_refs = self.references(settings.ctf_box_px, settings.ctf_binning)
        band = settings.ctf_resolution_a or ctf_refs.band_limit_a()
        results = []
        for index, item in enumerate(self.series):
            comparison = self._comparison(ctf_refs, index, settings.ctf_box_px,
                                          settings.ctf_binning, band)
            result = refine_ctf(comparison, item.optics, astigmatism=settings.astigmatism,
                                particle_defocus=settings.particle_defocus)
            item.optics = result.optics
            if settings.particle_defocus:
                item.defocus_offsets_a = result.particle_defocus_a
            results.append(result)
            self.history.append({"step": "ctf", "series": index,
                                 "resolution_a": float(ctf_refs.fsc.resolution_a),
                                 "band_a": float(band), "rms_defocus_change_a": float(
                                     np.sqrt(np.mean(result.defocus_changes_a ** 2)))})
        return results, self.references(settings.box_px, settings.binning)

    def motion_step(self, refs):
        settings = self.settings
        for index, item in enumerate(self.series):
            found = self._displacements(refs, index, narrow=True)
            item.motion_a = smooth_motion(item.positions_a, found.displacements_a,
                                          found.information, sigma_a=settings.motion_sigma_a,
                                          length_a=settings.motion_length_a)
            self.history.append({"step": "motion", "series": index,
                                 "resolution_a": float(refs.fsc.resolution_a),
                                 "rms_motion_a": float(np.sqrt(np.mean(np.sum(
                                     item.motion_a ** 2, -1))))})
        return self.references(settings.box_px, settings.binning)
