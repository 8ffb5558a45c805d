"""pick.template and pick.membrane: oriented particles from tomograms.

pick.template searches every orientation of a template (missing-wedge and CTF aware, local
normalised cross-correlation) and keeps the peaks above a threshold chosen from the score
statistics. pick.membrane puts particles on detected membranes, oriented along the normal.
Particle positions are Å from the tomogram centre: voxel = position / pixel size + N // 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms import membranes
from tomoweave.algorithms.template_picking import (
    PickResult,
    pick_with_template,
    prepare_search_template,
    rescale_factor_checked,
    whitening_profile,
)
from tomoweave.engine import (
    Input,
    InputError,
    ItemError,
    Output,
    ProcessContext,
    Protocol,
    Task,
    param,
)
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.geometry.symmetry import parse_symmetry
from tomoweave.model import Particle, Segmentation, TiltSeries, Tomogram, Volume


class TemplateParams(BaseModel):
    angular_step_deg: float = param(15.0, ge=1, le=60, unit="°",
                                    help="spacing of the orientation grid")
    particle_diameter_a: float = param(250.0, gt=0, unit="Å",
                                       help="particle diameter: mask, exclusion and margins")
    max_particles: int = param(500, ge=1, help="most particles kept per tomogram")
    score_threshold: float | None = param(None, ge=-1, le=1, help="keep peaks above this NCC "
                                          "(default: chosen from the score statistics)")
    threshold_method: Literal["auto", "extreme", "sigma", "otsu"] = param(
        "auto", choices=["auto", "extreme", "sigma", "otsu"],
        help="how the threshold is chosen when none is given")
    symmetry: str | None = param(None, help="point group of the template (default: the "
                                 "template's own)")
    tilt_min_deg: float | None = param(None, ge=-90, le=90, unit="°",
                                       help="lowest tilt (default: the tilt series', or -60)")
    tilt_max_deg: float | None = param(None, ge=-90, le=90, unit="°",
                                       help="highest tilt (default: the tilt series', or 60)")
    lowpass_a: float | None = param(None, gt=0, unit="Å", help="low-pass of template and "
                                    "tomogram (default: 2 × the voxel size, Nyquist)")
    use_ctf: bool = param(True, help="weight the template by the CTF when the defocus is known")
    defocus_a: float | None = param(None, gt=0, unit="Å",
                                    help="defocus for the CTF (default: the tilt series')")
    particle_contrast: Literal["dark", "bright"] = param(
        "dark", choices=["dark", "bright"], help="how particles look in the tomogram")
    expected_false_picks: float = param(1.0, gt=0, help="noise peaks expected above the "
                                        "automatic threshold (from the fit of the peak scores)")
    whiten: bool = param(True, help="flatten the tomogram's noise spectrum (spectral "
                         "whitening), for the tomogram and the template alike")
    mask_gold: bool = param(True, help="ignore peaks around gold beads")
    refine_orientations: bool = param(True, help="refine each particle's orientation locally")


class PickTemplate(Protocol):
    """Template matching with a missing-wedge-aware angular search and local normalisation."""

    name = "pick.template"
    label = "Template matching"
    description = ("Searches every orientation of a template in each tomogram by FFT "
                   "cross-correlation (template weighted by the missing wedge and the CTF, "
                   "score normalised by the local standard deviation) and picks the peaks.")
    Params = TemplateParams
    inputs = {
        "tomograms": Input(Tomogram, help="tomograms to search"),
        "template": Input(Volume, mapped=False, help="the template map"),
        "tilt_series": Input(TiltSeries, mapped=False, optional=True,
                             help="tilt series of the tomograms (tilt range and defocus)"),
    }
    outputs = {"particles": Output(Particle, help="picked particles with orientation and score")}
    citations = [
        "Chaillet ML, van der Schot G, Gubins I, Roet S, Veltkamp RC, Förster F (2023) "
        "Extensive angular sampling enables the sensitive localization of macromolecules in "
        "electron tomograms. Int J Mol Sci 24:13375. doi:10.3390/ijms241713375",
        "Förster F, Han BG, Beck M (2010) Visual proteomics. Methods Enzymol 483:215-243. "
        "doi:10.1016/S0076-6879(10)83011-3",
    ]

    def plan(self, params: TemplateParams, inputs: dict[str, Any]) -> list[Task]:
        templates = inputs.get("template") or []
        if len(templates) != 1:
            raise InputError(f"template: expected one Volume, got {len(templates)}")
        template = templates[0]
        for tomogram in inputs.get("tomograms", []):
            try:
                rescale_factor_checked(template.pixel_size_a, tomogram.pixel_size_a)
            except ValueError as error:
                raise InputError(f"template {template.name} for tomogram {tomogram.name}: "
                                 f"{error}") from None
        try:
            parse_symmetry(params.symmetry or template.symmetry)
        except ValueError as error:
            raise InputError(f"symmetry: {error}") from None
        return super().plan(params, inputs)

    def process(self, item: Tomogram, params: TemplateParams,
                context: ProcessContext) -> dict[str, Any]:
        template_item: Volume = context.inputs["template"][0]
        tomogram = _read(context, item.path, item.name)
        template, template_pixel_a = read_mrc(context.resolve(template_item.path))
        template_pixel_a = template_item.pixel_size_a or template_pixel_a
        pixel = item.pixel_size_a
        if abs(template_pixel_a / pixel - 1) > 1e-3:
            context.log(f"template {template_item.name} at {template_pixel_a:g} Å "
                        f"rescaled to the tomogram's {pixel:g} Å (factor "
                        f"{template_pixel_a / pixel:.3f})")
        series = _series_of(item, context.inputs.get("tilt_series") or [])
        tilt_range = _tilt_range(params, series)
        ctf = _ctf(params, item, series)
        lowpass_a = params.lowpass_a or 2.0 * pixel
        symmetry = params.symmetry or template_item.symmetry
        whitening = whitening_profile(tomogram, tilt_range) if params.whiten else None
        prepared = prepare_search_template(template, template_pixel_a, pixel,
                                           params.particle_diameter_a, params.particle_contrast,
                                           tilt_range, lowpass_a, ctf, whitening=whitening)
        ctf_text = f"defocus {ctf['defocus_a']:.0f} Å" if ctf else "off"
        context.log(f"tilt range {tilt_range[0]:g}…{tilt_range[1]:g}°, CTF "
                    f"{ctf_text}, low-pass "
                    f"{lowpass_a:g} Å, template box {prepared.box}")
        result = pick_with_template(
            tomogram, pixel, prepared, params.angular_step_deg, params.particle_diameter_a,
            symmetry, params.max_particles, params.score_threshold, params.threshold_method,
            lowpass_a, params.mask_gold, params.refine_orientations, whitening=whitening,
            n_false=params.expected_false_picks,
            progress=_progress_logger(context, item.name))
        for message in result.messages:
            context.log(message)
        centre = np.array(tomogram.shape[::-1]) // 2
        positions_a = (result.positions_xyz_px - centre) * pixel
        particles = [
            Particle(name=f"{item.name}_{i:04d}", tomogram=item.name,
                     position_a=tuple(float(v) for v in position),
                     rotation=_orthonormal(rotation).tolist(), score=float(score))
            for i, (position, rotation, score) in enumerate(
                zip(positions_a, result.rotations, result.scores, strict=True))]
        write_mrc(context.output_path(f"{item.name}_scores.mrc"), result.score_map, pixel)
        score_histogram_png(result, context.output_path(f"{item.name}_score_histogram.png"),
                            f"{item.name}: peak scores and threshold (pick.template)")
        particles_png(tomogram, result.positions_xyz_px, result.scores,
                      context.output_path(f"{item.name}_particles.png"),
                      f"{item.name}: {len(particles)} particles (pick.template)",
                      0.5 * params.particle_diameter_a / pixel)
        return {"particles": particles}


class MembraneParams(BaseModel):
    spacing_a: float = param(100.0, gt=0, unit="Å", help="distance between picked points")
    thickness_a: float = param(50.0, gt=0, unit="Å", help="membrane thickness")
    polarity: Literal["dark", "bright"] = param("dark", choices=["dark", "bright"],
                                                help="contrast of membranes in the tomogram")
    threshold: float | None = param(None, ge=0, help="sheetness threshold (default: automatic)")
    min_area_a2: float = param(2.0e5, ge=0, unit="Å²", help="smallest membrane kept")
    normal_direction: Literal["outward", "inward"] = param(
        "outward", choices=["outward", "inward"], help="side the normal points to, relative to "
        "the membrane's centre (outward: out of a vesicle)")


class PickMembrane(Protocol):
    """Oriented particles on membrane surfaces, the reference Z along the membrane normal."""

    name = "pick.membrane"
    label = "Pick on membranes"
    description = ("Detects membranes (Hessian sheetness) and places points on each one at a "
                   "given spacing, oriented along the normal (initial orientation for "
                   "membrane proteins).")
    Params = MembraneParams
    inputs = {"tomograms": Input(Tomogram, help="tomograms with membranes")}
    outputs = {"particles": Output(Particle, help="oriented points with membrane id and normal")}
    citations = [
        "Frangi AF, Niessen WJ, Vincken KL, Viergever MA (1998) Multiscale vessel enhancement "
        "filtering. MICCAI 1998, LNCS 1496:130-137. doi:10.1007/BFb0056195",
    ]

    def process(self, item: Tomogram, params: MembraneParams,
                context: ProcessContext) -> dict[str, Any]:
        tomogram = _read(context, item.path, item.name)
        pixel = item.pixel_size_a
        segmentation = membranes.segment_membranes(tomogram, pixel, params.thickness_a,
                                                   params.polarity, params.threshold,
                                                   params.min_area_a2)
        positions, normals, ids = membranes.oriented_points(
            segmentation, params.spacing_a / pixel, params.normal_direction == "outward")
        centre = np.array(tomogram.shape[::-1]) // 2
        particles = [
            Particle(name=f"{item.name}_m{i:04d}", tomogram=item.name,
                     position_a=tuple(float(v) for v in (p - centre) * pixel),
                     rotation=membranes.rotation_from_normal(n).tolist(),
                     membrane_id=int(m), normal=tuple(float(v) for v in n))
            for i, (p, n, m) in enumerate(zip(positions, normals, ids, strict=True))]
        context.log(f"{segmentation.count} membranes, {len(particles)} points "
                    f"every {params.spacing_a:g} Å")
        particles_png(tomogram, positions, None, context.output_path(f"{item.name}_membrane.png"),
                      f"{item.name}: {len(particles)} membrane points", 3.0)
        return {"particles": particles}


# ----------------------------------------------------------------------------- helpers
def _read(context: ProcessContext, path: str, name: str) -> np.ndarray:
    try:
        data, _ = read_mrc(context.resolve(path))
    except MrcError as error:
        raise ItemError(f"{name}: {error}") from None
    if data.ndim != 3:
        raise ItemError(f"{name}: {path} is not a 3D volume (shape {data.shape})")
    return data


def _orthonormal(rotation: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(rotation, dtype=float))
    return u @ vt


def _series_of(tomogram: Tomogram, series: list[TiltSeries]) -> TiltSeries | None:
    wanted = tomogram.tilt_series or tomogram.name
    return next((s for s in series if s.name == wanted), None)


def _tilt_range(params: TemplateParams, series: TiltSeries | None) -> tuple[float, float]:
    low, high = -60.0, 60.0
    if series is not None:
        tilts = [t.alignment.y_tilt_deg if t.alignment else t.tilt_deg
                 for t in series.included_tilts()]
        low, high = min(tilts), max(tilts)
    low = params.tilt_min_deg if params.tilt_min_deg is not None else low
    high = params.tilt_max_deg if params.tilt_max_deg is not None else high
    if not low < high:
        raise ItemError(f"tilt range {low}…{high}°: the lowest tilt must be below the highest")
    return float(low), float(high)


def _ctf(params: TemplateParams, tomogram: Tomogram, series: TiltSeries | None) -> dict | None:
    if not params.use_ctf:
        return None
    defocus = params.defocus_a
    if defocus is None and series is not None:
        values = [0.5 * (t.ctf.defocus_u_a + t.ctf.defocus_v_a)
                  for t in series.included_tilts() if t.ctf is not None]
        defocus = float(np.mean(values)) if values else None
    if defocus is None:
        return None
    acquisition = tomogram.acquisition or (series.acquisition if series else None)
    ctf: dict[str, Any] = {"defocus_a": defocus, "phase_flipped": tomogram.ctf_corrected}
    if acquisition is not None:
        ctf.update(voltage_kv=acquisition.voltage_kv,
                   spherical_aberration_mm=acquisition.spherical_aberration_mm,
                   amplitude_contrast=acquisition.amplitude_contrast)
    return ctf


def _progress_logger(context: ProcessContext, name: str):
    """Log the search's progress every 10 % (it is the long part of picking)."""
    state = {"next": 0.1}

    def progress(done: int, total: int) -> None:
        if done >= state["next"] * total:
            context.log(f"{name}: searched {done}/{total} orientations")
            state["next"] += 0.1

    return progress


def score_histogram_png(result: PickResult, path: Path, title: str) -> Path:
    """Histogram of every peak's score, the fitted noise law, the threshold and the picks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(result.peak_scores if result.peak_scores is not None else result.scores)
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    if values.size:
        edges = np.linspace(values.min(), max(values.max(), result.threshold) + 1e-6, 61)
        axis.hist(values, bins=edges, color="0.6", label=f"{values.size} peaks")
        if result.noise is not None:
            fine = np.linspace(edges[0], edges[-1], 400)
            width = edges[1] - edges[0]
            # expected count per bin: the derivative of the expected number above
            density = -np.gradient(result.noise.expected_above(fine), fine) * width
            axis.plot(fine, density, color="tab:blue",
                      label=f"noise model (Gumbel, scale {result.noise.scale:.3g})")
        axis.set_yscale("log")
        axis.set_ylim(0.5, None)
    axis.axvline(result.threshold, color="tab:red",
                 label=f"threshold {result.threshold:.3f}: {len(result.scores)} picks")
    axis.set_xlabel("score (local normalised cross-correlation)")
    axis.set_ylabel("peaks per bin")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def particles_png(tomogram: np.ndarray, positions_xyz_px: np.ndarray, scores: np.ndarray | None,
                  path: Path, title: str, radius_px: float) -> Path:
    """The central third of the tomogram averaged along Z, with the particles drawn as circles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    depth = tomogram.shape[0]
    slab = np.asarray(tomogram[depth // 3: max(depth // 3 + 1, 2 * depth // 3)], dtype=np.float32)
    image = slab.mean(axis=0)
    low, high = np.percentile(image, [1, 99])
    figure, axis = plt.subplots(figsize=(6, 6 * image.shape[0] / max(image.shape[1], 1) + 0.4))
    axis.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower")
    colours = plt.cm.viridis(np.linspace(0, 1, 256))
    values = np.asarray(scores if scores is not None else np.ones(len(positions_xyz_px)))
    span = max(float(np.ptp(values)), 1e-9) if len(values) else 1.0
    for (x, y, _), value in zip(np.asarray(positions_xyz_px).reshape(-1, 3), values, strict=True):
        colour = colours[int(255 * (value - values.min()) / span)]
        axis.add_patch(Circle((x, y), radius_px, fill=False, color=colour, linewidth=1.2))
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("x (voxels)")
    axis.set_ylabel("y (voxels)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


__all__ = ["PickMembrane", "PickTemplate", "particles_png", "score_histogram_png", "Segmentation"]
