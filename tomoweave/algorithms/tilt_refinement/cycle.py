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
from dataclasses import dataclass, field

import numpy as np

from tomoweave.algorithms.averaging.pseudo_subtomograms import TiltSeriesOptics
from tomoweave.algorithms.tilt_refinement.ctf import CtfRefinement, refine_ctf
from tomoweave.algorithms.tilt_refinement.geometry import TiltGeometry, fit_geometry
from tomoweave.algorithms.tilt_refinement.measure import compare_particles, measure_displacements
from tomoweave.algorithms.tilt_refinement.motion import smooth_motion
from tomoweave.algorithms.tilt_refinement.references import build_references


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
    """The refined state of the series and what each step changed.

    history : one dict per step (step, resolution_a of the references it used, ...).
    """

    geometry: TiltGeometry
    optics: TiltSeriesOptics
    particle_defocus_a: np.ndarray
    motion_a: np.ndarray | None
    resolution_before_a: float
    resolution_after_a: float
    ctf: CtfRefinement | None = None
    history: list[dict] = field(default_factory=list)


def refine_cycle(images: np.ndarray, geometry: TiltGeometry, optics: TiltSeriesOptics,
                 image_pixel_size_a: float, positions_a: np.ndarray, rotations: np.ndarray,
                 half_sets: np.ndarray, settings: CycleSettings, *,
                 progress: Callable[[float, str], None] | None = None) -> CycleResult:
    """Refine one tilt series' geometry, CTF and particle motion against its particles.

    Parameters
    ----------
    images : (T, ny, nx) tilt images in contrast units, in the order of the geometry.
    geometry, optics : the current alignment (TiltGeometry) and per-tilt CTF.
    image_pixel_size_a : Å per pixel of ``images``.
    positions_a, rotations : (N, 3), (N, 3, 3) the particles (Å from the tomogram centre;
        reference -> particle).
    half_sets : (N,) 1 or 2.
    settings : CycleSettings.
    progress : callback(fraction, message), optional.
    """
    report = progress or (lambda fraction, message: None)
    run = _Run(images, settings, {"image_pixel_size_a": image_pixel_size_a,
                                  "positions_a": positions_a, "rotations": rotations,
                                  "half_sets": half_sets},
               {"geometry": geometry.copy(), "optics": optics, "defocus": None,
                "motion": None})
    refs = run.references(settings.box_px, settings.binning)
    before = refs.fsc.resolution_a
    steps = (settings.geometry_rounds if settings.geometry else 0) + 2
    for index in range(settings.geometry_rounds if settings.geometry else 0):
        report(index / steps, f"geometry round {index + 1}: references at "
               f"{refs.fsc.resolution_a:.1f} Å")
        refs = run.geometry_round(refs, index)
    ctf_result = None
    if settings.ctf:
        report((steps - 2) / steps, "CTF")
        ctf_result, refs = run.ctf_step()
    if settings.motion:
        report((steps - 1) / steps, "particle motion")
        refs = run.motion_step(refs)
    report(1.0, f"resolution {before:.1f} Å -> {refs.fsc.resolution_a:.1f} Å")
    state = run.state
    count = len(np.asarray(positions_a).reshape(-1, 3))
    return CycleResult(state["geometry"], state["optics"],
                       np.zeros(count) if state["defocus"] is None else state["defocus"],
                       state["motion"], float(before), float(refs.fsc.resolution_a),
                       ctf_result, run.history)


class _Run:
    """The state of one cycle and its steps (each returns the references rebuilt after it)."""

    def __init__(self, images, settings: CycleSettings, common: dict, state: dict):
        self.images, self.settings, self.common, self.state = images, settings, common, state
        self.history: list[dict] = []

    def references(self, box, binning):
        return build_references(self.images, self.state["geometry"], self.state["optics"],
                                **self.common, box_px=box, binning=binning,
                                groups=self.settings.groups,
                                defocus_offsets_a=self.state["defocus"],
                                motion_a=self.state["motion"])

    def geometry_round(self, refs, index: int):
        settings = self.settings
        displacements, _ = _displacements(self.images, self.state, refs, settings, self.common,
                                          narrow=index > 0)
        self.state["geometry"], fit = fit_geometry(
            self.state["geometry"], self.common["positions_a"], displacements.displacements_a,
            displacements.information, names=settings.parameters,
            shared_tilt_offset=settings.shared_tilt_offset,
            deformation_sigma_a=settings.deformation_sigma_a)
        self.history.append({"step": "geometry", "round": index + 1,
                             "resolution_a": float(refs.fsc.resolution_a),
                             "tilt_offset_deg": fit.tilt_offset_deg,
                             "rms_shift_change_a": float(np.sqrt(2 * np.mean(
                                 fit.changes[:, :2] ** 2)))})
        return self.references(settings.box_px, settings.binning)

    def ctf_step(self):
        settings, common = self.settings, self.common
        ctf_refs = self.references(settings.ctf_box_px, settings.ctf_binning)
        maps, labels = ctf_refs.for_particles(common["half_sets"])
        band = settings.ctf_resolution_a or ctf_refs.band_limit_a()
        comparison = compare_particles(
            self.images, self.state["geometry"], common["image_pixel_size_a"],
            common["positions_a"], common["rotations"], labels, maps,
            box_px=settings.ctf_box_px, binning=settings.ctf_binning, resolution_a=band,
            motion_a=self.state["motion"])
        result = refine_ctf(comparison, self.state["optics"], astigmatism=settings.astigmatism,
                            particle_defocus=settings.particle_defocus)
        self.state["optics"] = result.optics
        if settings.particle_defocus:
            self.state["defocus"] = result.particle_defocus_a
        self.history.append({"step": "ctf", "resolution_a": float(ctf_refs.fsc.resolution_a),
                             "band_a": float(band), "rms_defocus_change_a": float(np.sqrt(
                                 np.mean(result.defocus_changes_a ** 2)))})
        return result, self.references(settings.box_px, settings.binning)

    def motion_step(self, refs):
        settings = self.settings
        displacements, _ = _displacements(self.images, self.state, refs, settings, self.common,
                                          narrow=True)
        self.state["motion"] = smooth_motion(
            self.common["positions_a"], displacements.displacements_a,
            displacements.information, sigma_a=settings.motion_sigma_a,
            length_a=settings.motion_length_a)
        self.history.append({"step": "motion", "resolution_a": float(refs.fsc.resolution_a),
                             "rms_motion_a": float(np.sqrt(np.mean(np.sum(
                                 self.state["motion"] ** 2, -1))))})
        return self.references(settings.box_px, settings.binning)


def _displacements(images, state, refs, settings, common, narrow):
    maps, labels = refs.for_particles(common["half_sets"])
    comparison = compare_particles(images, state["geometry"], common["image_pixel_size_a"],
                                   common["positions_a"], common["rotations"], labels, maps,
                                   box_px=settings.box_px, binning=settings.binning,
                                   resolution_a=refs.band_limit_a(), motion_a=state["motion"])
    pixel = comparison.setup.pixel_size_a
    radius_px = settings.search_radius_a / pixel
    result = measure_displacements(comparison, state["optics"], search_radius_px=radius_px,
                                   particle_radius_px=radius_px / (5.0 if narrow else 2.5),
                                   defocus_offsets_a=state["defocus"])
    return result, comparison
