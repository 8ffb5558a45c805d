"""refine.tilt_geometry and refine.ctf: the average corrects the geometry and the CTF it was
made from (per-particle per-tilt refinement, algorithms/tilt_refinement).

Each particle of a tilt series is compared, in every tilt, with the projection of its own
half map (the average's half 1 or 2, by the particle's ``half_set``: gold standard) at its
refined pose, through the tilt's CTF. ``refine.tilt_geometry`` fits per-tilt shift, in-plane
rotation, magnification and one tilt-angle offset of the series (and a regularised smooth
deformation of the field, written beside the series: the alignment model has no slot for it)
and writes the series with the new alignment. ``refine.ctf`` refines each tilt's defocus (and
optionally astigmatism) and each particle's defocus offset, and writes the series with the
new CTF. Run them in the refinement cycle: reconstruct → refine.ctf → refine.tilt_geometry →
particles.extract_pseudo → average.refine (local) → repeat while the resolution improves
(workflows/tilt_refinement.yaml).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.averaging.pseudo_subtomograms import source_box_px
from tomoweave.algorithms.fourier import fsc_weighting, shell_filter
from tomoweave.algorithms.tilt_refinement.ctf import refine_ctf
from tomoweave.algorithms.tilt_refinement.geometry import TiltGeometry, fit_geometry
from tomoweave.algorithms.tilt_refinement.measure import compare_particles, measure_displacements
from tomoweave.algorithms.volumes import crop_or_pad, rescale_volume
from tomoweave.engine import Input, InputError, Output, ProcessContext, Protocol, Task, param
from tomoweave.model import (
    Average,
    CtfTilt,
    Particle,
    Subtomogram,
    TiltSeries,
    particles_by_tomogram,
)
from tomoweave.protocols import postprocess_outputs, refine_outputs
from tomoweave.protocols.extract import contrast_stack, series_geometry

CITATIONS = ["Zivanov J, et al. (2022) A Bayesian approach to single-particle electron "
             "cryo-tomography in RELION-4.0. eLife 11:e83724.",
             "Tegunov D, Xue L, Dienemann C, Cramer P, Mahamid J (2021) Multi-particle cryo-EM "
             "refinement with M visualizes ribosome-antibiotic complex at 3.5 Å in cells. "
             "Nat Methods 18:186-193."]


class _Common(BaseModel):
    box_size_px: int = param(48, ge=16, le=512, unit="px", help="patch box (even)")
    binning: float = param(2.0, ge=1, le=16, help="patch binning relative to the tilt images")
    resolution_a: float | None = param(None, gt=0, unit="Å", help="highest resolution "
                                       "compared (default: the average's resolution)")


class GeometryParams(_Common):
    rotation: bool = param(True, help="refine each tilt's in-plane rotation")
    magnification: bool = param(True, help="refine each tilt's magnification")
    tilt_offset: bool = param(True, help="refine one tilt-angle offset for the series")
    deformation: bool = param(True, help="refine a smooth (quadratic) deformation per tilt")
    deformation_sigma_a: float = param(4.0, gt=0, unit="Å", help="prior width of each "
                                       "deformation coefficient")
    search_radius_a: float = param(32.0, gt=0, unit="Å", help="largest shift searched")


class CtfParams(_Common):
    box_size_px: int = param(80, ge=16, le=512, unit="px", help="patch box (even)")
    binning: float = param(1.0, ge=1, le=16, help="patch binning relative to the tilt images")
    defocus_range_a: float = param(4000.0, gt=0, unit="Å", help="defocus change searched")
    astigmatism: bool = param(False, help="also refine each tilt's astigmatism")
    particle_defocus: bool = param(True, help="refine a defocus offset per particle")


def _plan(protocol: Protocol, inputs: dict[str, Any], box_size_px: int) -> list[Task]:
    if box_size_px % 2:
        raise InputError(f"box_size_px {box_size_px}: expected an even size")
    averages = list(inputs.get("average") or [])
    if len(averages) != 1:
        raise InputError(f"{protocol.name}: input 'average' holds {len(averages)} averages: "
                         "give one")
    average = averages[0]
    if not average.half1_path or not average.half2_path:
        raise InputError(f"average {average.name}: half1_path and half2_path are needed")
    series_by_name = {s.name: s for s in inputs.get("tilt_series") or []}
    chosen = list(inputs.get("particles") or []) + [
        s.particle for s in inputs.get("subtomograms") or []]
    if not chosen:
        raise InputError(f"{protocol.name}: give 'particles' or 'subtomograms' (with refined "
                         "poses and half sets)")
    groups = particles_by_tomogram(chosen)
    tasks = []
    for name, series in sorted(series_by_name.items()):
        particles = groups.get(name, [])
        unsplit = [p.name for p in particles if p.half_set is None]
        if unsplit:
            raise InputError(f"particles of {name}: {len(unsplit)} have no half_set (e.g. "
                             f"{unsplit[0]}); refine them with average.refine first")
        if {p.half_set for p in particles} != {1, 2}:
            raise InputError(f"particles of {name}: both half sets are needed, found "
                             f"{sorted({p.half_set for p in particles})}")
        series_geometry(series, need_ctf=True)
        tasks.append(Task(key=name, payload={
            "series": series.model_dump(mode="json"),
            "particles": [p.model_dump(mode="json") for p in particles],
            "average": average.model_dump(mode="json")}))
    if not tasks:
        raise InputError(f"{protocol.name}: no tilt series in the input")
    return tasks


def _setting(payload: dict, params: _Common, context: ProcessContext) -> dict:
    """Everything both protocols compare with: images, geometry, optics, particles, maps."""
    series = TiltSeries(**payload["series"])
    particles = [Particle(**p) for p in payload["particles"]]
    average = Average(**payload["average"])
    _, optics, indices = series_geometry(series, need_ctf=True)
    pixel = series.pixel_size_a
    images = contrast_stack(series, indices, context)
    geometry = TiltGeometry.from_alignments([series.tilts[i].alignment for i in indices],
                                            0.5 * max(images.shape[1:]) * pixel, order=2)
    patch_pixel = pixel * source_box_px(params.box_size_px, params.binning) / params.box_size_px
    halves = postprocess_outputs.half_maps(context, average)
    _, fsc = average.fsc_arrays()
    weighting = shell_filter(fsc_weighting(fsc), params.box_size_px) if fsc.size else None
    maps = {h: _on_grid(m, average.pixel_size_a, patch_pixel, params.box_size_px, weighting)
            for h, m in zip((1, 2), halves, strict=True)}
    positions = np.array([p.refined_position_a for p in particles], dtype=float)
    return {"series": series, "particles": particles, "indices": indices, "images": images,
            "geometry": geometry, "optics": optics, "maps": maps, "positions": positions,
            "rotations": np.array([p.rotation_matrix for p in particles]),
            "half_sets": np.array([p.half_set for p in particles]), "pixel": pixel,
            "resolution_a": params.resolution_a or average.resolution_a or 4 * patch_pixel}


def _on_grid(volume, from_pixel_a, to_pixel_a, box_px, weighting):
    import scipy.fft

    resampled = crop_or_pad(rescale_volume(volume, from_pixel_a, to_pixel_a), box_px)
    if weighting is None or weighting.shape[0] != box_px:
        return resampled
    spectrum = scipy.fft.rfftn(resampled, workers=-1) * weighting
    return scipy.fft.irfftn(spectrum, resampled.shape, workers=-1).astype(np.float32)


def _compare(setting: dict, params: _Common):
    return compare_particles(setting["images"], setting["geometry"], setting["pixel"],
                             setting["positions"], setting["rotations"], setting["half_sets"],
                             setting["maps"], box_px=params.box_size_px, binning=params.binning,
                             resolution_a=setting["resolution_a"])


class RefineTiltGeometry(Protocol):
    """Per-tilt shift, rotation, magnification, tilt offset and deformation from particles."""

    name = "refine.tilt_geometry"
    label = "Refine tilt geometry from particles"
    description = ("Compares every particle, in every tilt, with the projection of its own "
                   "half map at its pose (CTF and exposure included) and fits what each tilt's "
                   "alignment got wrong: shift, in-plane rotation, magnification, one "
                   "tilt-angle offset of the series and a smooth, regularised deformation of "
                   "the field. Writes the series with the new alignment, the deformation "
                   "(JSON), and plots of the corrections against the tilt angle and of the "
                   "deformation as arrows.")
    citations = CITATIONS
    Params = GeometryParams
    inputs = {"tilt_series": Input(TiltSeries, mapped=False, help="aligned series with CTF"),
              "particles": Input(Particle, mapped=False, optional=True,
                                 help="particles with refined poses and half sets"),
              "subtomograms": Input(Subtomogram, mapped=False, optional=True,
                                    help="or the subtomograms of average.refine (their "
                                    "particles)"),
              "average": Input(Average, mapped=False, help="the average (half maps, FSC)")}
    outputs = {"tilt_series": Output(TiltSeries, help="the series with refined alignment")}

    def plan(self, params: GeometryParams, inputs: dict[str, Any]) -> list[Task]:
        return _plan(self, inputs, params.box_size_px)

    def process(self, payload: dict, params: GeometryParams,
                context: ProcessContext) -> dict[str, Any]:
        setting = _setting(payload, params, context)
        series, geometry = setting["series"], setting["geometry"]
        if not params.deformation:
            geometry.deformation_a[:] = 0.0
        comparison = _compare(setting, params)
        pixel = comparison.setup.pixel_size_a
        found = measure_displacements(comparison, setting["optics"],
                                      search_radius_px=params.search_radius_a / pixel,
                                      particle_radius_px=params.search_radius_a / pixel / 2.5)
        names = ("shift_x_a", "shift_y_a") + (("z_rot_deg",) if params.rotation else ()) + (
            ("magnification",) if params.magnification else ())
        refined, fit = fit_geometry(geometry, setting["positions"], found.displacements_a,
                                    found.information, names=names,
                                    shared_tilt_offset=params.tilt_offset,
                                    deformation_sigma_a=params.deformation_sigma_a
                                    if params.deformation else 1e-6)
        new = series.model_copy(deep=True)
        for row, index in enumerate(setting["indices"]):
            alignment = new.tilts[index].alignment
            for field in ("y_tilt_deg", "z_rot_deg", "shift_x_a", "shift_y_a", "magnification"):
                setattr(alignment, field, float(getattr(refined, field)[row]))
        tilt_deg = np.array([series.tilts[i].tilt_deg for i in setting["indices"]])
        changes = {"shift x (Å)": refined.shift_x_a - geometry.shift_x_a,
                   "shift y (Å)": refined.shift_y_a - geometry.shift_y_a}
        if params.rotation:
            changes["rotation (°)"] = refined.z_rot_deg - geometry.z_rot_deg
        if params.magnification:
            changes["magnification − 1 (%)"] = 100 * (refined.magnification
                                                      - geometry.magnification)
        refine_outputs.corrections_png(tilt_deg, changes, context.output_path(
            f"{series.name}_{refine_outputs.CORRECTIONS_PNG}"), f"{series.name}: corrections")
        if params.deformation:
            refine_outputs.deformation_png(refined, tilt_deg, context.output_path(
                f"{series.name}_{refine_outputs.DEFORMATION_PNG}"), f"{series.name}: field")
        refine_outputs.write_json(context.output_path(f"{series.name}_geometry.json"), {
            "tilt_deg": tilt_deg.tolist(), "tilt_offset_deg": fit.tilt_offset_deg,
            "field_half_size_a": refined.field_half_size_a, "deformation_order": refined.order,
            "deformation_a": refined.deformation_a.tolist(),
            **{k: np.asarray(v).tolist() for k, v in changes.items()}})
        rms = float(np.sqrt(np.mean(changes["shift x (Å)"] ** 2 + changes["shift y (Å)"] ** 2)))
        context.log(f"{series.name}: {len(setting['particles'])} particles, shift changes "
                    f"{rms:.2f} Å RMS, tilt offset {fit.tilt_offset_deg:+.3f}°, compared to "
                    f"{setting['resolution_a']:.1f} Å")
        return {"tilt_series": new}


class RefineCtf(Protocol):
    """Per-tilt defocus (and astigmatism), per-particle defocus offsets, per-tilt scales."""

    name = "refine.ctf"
    label = "Refine CTF from particles"
    description = ("Compares every particle, in every tilt, with the projection of its own "
                   "half map at its pose and finds the defocus of each tilt that explains the "
                   "particles best (a dense search; optionally the astigmatism), a defocus "
                   "offset per particle (its height error, with a prior) and the signal scale "
                   "of each tilt. Writes the series with the new CTF, the per-particle offsets "
                   "and scales (JSON) and a plot of the corrections against the tilt angle.")
    citations = CITATIONS
    Params = CtfParams
    inputs = RefineTiltGeometry.inputs
    outputs = {"tilt_series": Output(TiltSeries, help="the series with refined CTF")}

    def plan(self, params: CtfParams, inputs: dict[str, Any]) -> list[Task]:
        return _plan(self, inputs, params.box_size_px)

    def process(self, payload: dict, params: CtfParams,
                context: ProcessContext) -> dict[str, Any]:
        setting = _setting(payload, params, context)
        series = setting["series"]
        result = refine_ctf(_compare(setting, params), setting["optics"],
                            defocus_range_a=params.defocus_range_a,
                            astigmatism=params.astigmatism,
                            particle_defocus=params.particle_defocus)
        new = series.model_copy(deep=True)
        for row, index in enumerate(setting["indices"]):
            old = new.tilts[index].ctf
            new.tilts[index].ctf = CtfTilt(**{
                **old.model_dump(), "defocus_u_a": float(result.optics.defocus_u_a[row]),
                "defocus_v_a": float(result.optics.defocus_v_a[row]),
                "astigmatism_angle_deg": float(result.optics.astigmatism_angle_deg[row])})
        tilt_deg = np.array([series.tilts[i].tilt_deg for i in setting["indices"]])
        refine_outputs.corrections_png(
            tilt_deg, {"defocus change (Å)": result.defocus_changes_a,
                       "relative scale": result.tilt_scales - 1.0},
            context.output_path(f"{series.name}_{refine_outputs.CTF_PNG}"),
            f"{series.name}: CTF corrections")
        refine_outputs.write_json(context.output_path(f"{series.name}_ctf.json"), {
            "tilt_deg": tilt_deg.tolist(), "defocus_change_a": result.defocus_changes_a.tolist(),
            "tilt_scale": result.tilt_scales.tolist(),
            "particle_defocus_a": {p.name: float(v) for p, v in zip(
                setting["particles"], result.particle_defocus_a, strict=True)}})
        context.log(f"{series.name}: defocus changes {np.sqrt(np.mean(result.defocus_changes_a ** 2)):.0f}"
                    f" Å RMS over {len(tilt_deg)} tilts, particle offsets "
                    f"{np.std(result.particle_defocus_a):.0f} Å RMS")
        return {"tilt_series": new}
