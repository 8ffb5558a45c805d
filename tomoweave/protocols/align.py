"""Tilt-series alignment: align.xcorr, align.fiducial, align.patch, tiltseries.apply_alignment.

Alignment is stored as parameters (a TiltAlignment per tilt, geometry.projection_matrix), never
as resampled images; ``tiltseries.apply_alignment`` writes an aligned stack only on request.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.alignment.fiducial import (
    NoBeadsError,
    TrackedSolution,
    align_with_beads,
    coarse_shifts_full_px,
)
from tomoweave.algorithms.alignment.patch import align_with_patches
from tomoweave.algorithms.alignment.projmatch import to_specimen_frame
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import mmap_mrc, write_mrc
from tomoweave.geometry.projection import tilt_axis_to_z_rot_deg
from tomoweave.model import TiltAlignment, TiltSeries

MIN_TILTS = 3
# projection matching holds the shifts' smooth error modes best with a slab thinner than the
# specimen; measured on simulated series (tests/test_align_protocols.py, presets test and demo):
# 0.5-0.7 of the thickness works, thicker or thinner slabs drift by >1 px
REFINE_SLAB_FRACTION = 0.6
TiltAxisMode = Literal["global", "per_tilt", "fixed"]
TiltOffsetMethod = Literal["auto", "intensity", "beads", "none"]
BeadPolarity = Literal["dark", "light", "auto"]
_CITATIONS = [
    "Mastronarde DN, Held SR (2017) Automated tilt series alignment and tomographic "
    "reconstruction in IMOD. J Struct Biol 197:102-113. doi:10.1016/j.jsb.2016.07.011",
]


class XcorrParams(BaseModel):
    max_size_px: int = param(512, ge=64, le=4096, unit="px",
                             help="images are binned to at most this size for the correlation")
    lowpass: float = param(0.3, gt=0, le=1, help="Gaussian low-pass of the correlation, "
                                                 "fraction of Nyquist")


class SolverParams(BaseModel):
    tilt_axis_mode: TiltAxisMode = param(
        "global", choices=["global", "per_tilt", "fixed"],
        help="solve one tilt-axis angle (global), one in-plane rotation per tilt, or keep "
             "the nominal axis (fixed)")
    tilt_offset_method: TiltOffsetMethod = param(
        "auto", choices=["auto", "intensity", "beads", "none"],
        help="how the tilt-angle offset is measured: mean intensity vs tilt (Beer-Lambert), "
             "flat bead layers, auto (intensity when it fits, else bead layers), or none")
    outlier_k: float = param(4.0, gt=1, help="drop observations beyond this many robust "
                                             "standard deviations, then refit")


class FiducialParams(SolverParams):
    bead_diameter_a: float = param(100.0, gt=0, unit="Å", help="gold bead diameter")
    detection_threshold: float = param(8.0, gt=0, help="bead detection threshold, in robust "
                                                       "standard deviations of the matched filter")
    bead_polarity: BeadPolarity = param(
        "auto", choices=["dark", "light", "auto"],
        help="beads darker than the background (bright field), lighter (inverted contrast), "
             "or auto: the one whose features look more like beads in the tilt nearest 0°")
    solve_magnification: bool = param(True, help="solve one magnification per tilt")


class PatchParams(SolverParams):
    # patch tracks bias the fitted axis (0.7-3° off on simulated series, worse than a nominal
    # SerialEM axis), so the nominal axis is kept unless asked
    tilt_axis_mode: TiltAxisMode = param(
        "fixed", choices=["global", "per_tilt", "fixed"],
        help="keep the nominal tilt axis (fixed, recommended without beads), or solve one "
             "(global) or one rotation per tilt from the patch tracks")
    patch_size_a: float | None = param(None, gt=0, unit="Å", help="side of the tracked patches "
                                       "(default: a quarter of the shorter image side)")
    max_size_px: int = param(512, ge=64, le=4096, unit="px",
                             help="images are binned to at most this size for tracking")
    min_strength: float = param(4.0, gt=0, help="weakest accepted patch correlation peak")
    solve_magnification: bool = param(False, help="solve one magnification per tilt")
    specimen_thickness_a: float = param(1000.0, gt=0, unit="Å", help="approximate specimen "
                                        "(ice) thickness; sets the slab of projection matching")
    refine_rounds: int = param(3, ge=0, le=20, help="rounds of projection matching per slab "
                                                    "after the patch model (0: none)")


class ApplyParams(BaseModel):
    binning: int = param(1, ge=1, le=16, help="integer binning of the aligned stack")


def load_stack(item: TiltSeries, context: ProcessContext) -> tuple[np.ndarray, list[int]]:
    """Included tilts as a float32 stack (T, Y, X) and their indices in ``item.tilts``."""
    indices = [i for i, tilt in enumerate(item.tilts) if not tilt.excluded]
    if len(indices) < MIN_TILTS:
        raise ItemError(f"{item.name}: {len(indices)} included tilts; alignment needs at least "
                        f"{MIN_TILTS} (un-exclude tilts or import a complete series)")
    images = []
    for i in indices:
        tilt = item.tilts[i]
        if not tilt.image_path:
            raise ItemError(f"{item.name}: tilt {tilt.tilt_deg}° has no image (movies only? "
                            f"run motion correction first)")
        path = context.resolve(tilt.image_path)
        with mmap_mrc(path) as mrc:
            data = mrc.data if mrc.data.ndim == 3 else mrc.data[np.newaxis]
            if tilt.image_index >= data.shape[0]:
                raise ItemError(f"{path}: has {data.shape[0]} slices, tilt {tilt.tilt_deg}° "
                                f"needs slice {tilt.image_index}")
            image = np.array(data[tilt.image_index], dtype=np.float32)
        _check_image(image, path, tilt.image_index, tilt.tilt_deg)
        images.append(image)
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ItemError(f"{item.name}: tilt images differ in size {sorted(shapes)}")
    return np.stack(images), indices


def _check_image(image: np.ndarray, path, index: int, tilt_deg: float) -> None:
    """One clear line for an image alignment cannot use: non-finite or constant values."""
    finite = np.isfinite(image)
    if not finite.all():
        raise ItemError(f"{path}: slice {index} (tilt {tilt_deg:g}°) has "
                        f"{int((~finite).sum())} NaN or infinite pixels; fix or exclude the tilt "
                        f"(tiltseries.exclude_views)")
    if float(image.max()) == float(image.min()):
        raise ItemError(f"{path}: slice {index} (tilt {tilt_deg:g}°) is constant "
                        f"({float(image.min()):g} everywhere); exclude the tilt "
                        f"(tiltseries.exclude_views)")


def nominal_geometry(item: TiltSeries, indices: list[int]) -> tuple[np.ndarray, float]:
    tilts = np.array([item.tilts[i].tilt_deg for i in indices], dtype=float)
    return tilts, tilt_axis_to_z_rot_deg(item.acquisition.tilt_axis_deg)


def attach_solution(
    item: TiltSeries, indices: list[int], result: TrackedSolution, context: ProcessContext
) -> TiltSeries:
    """A copy of ``item`` with the solved alignment per tilt; unsolved tilts become excluded."""
    pixel_size = item.pixel_size_a
    solution = result.solution
    new = item.model_copy(deep=True)
    solved_indices = [i for i, ok in zip(indices, result.solved_tilts, strict=True) if ok]
    for i, ok in zip(indices, result.solved_tilts, strict=True):
        if not ok:
            new.tilts[i].excluded = True
            context.log(f"tilt {item.tilts[i].tilt_deg}°: too few tracked points, excluded")
    for k, i in enumerate(solved_indices):
        residual = solution.tilt_residual_px[k]
        new.tilts[i].alignment = TiltAlignment(
            y_tilt_deg=float(solution.y_tilt_deg[k]),
            x_tilt_deg=float(solution.x_tilt_deg),
            z_rot_deg=float(solution.z_rot_deg[k]),
            shift_x_a=float(solution.shifts_px[k, 0] * pixel_size),
            shift_y_a=float(solution.shifts_px[k, 1] * pixel_size),
            magnification=float(solution.magnification[k]),
            residual_a=None if not np.isfinite(residual) else float(residual * pixel_size),
        )
    new.alignment_residual_a = float(solution.mean_residual_px * pixel_size)
    error = result.estimated_error_px
    new.alignment_error_a = float(error * pixel_size) if np.isfinite(error) else None
    for line in result.log + result.warnings:
        context.log(line)
    estimate = (f"estimated error {error:.3f} px (independent halves); "
                if np.isfinite(error) else "")
    context.log(
        estimate + f"mean residual {solution.mean_residual_px:.3f} px = "
        f"{solution.mean_residual_px * pixel_size / 10:.3f} nm; tilt axis (z_rot) "
        f"{np.mean(solution.z_rot_deg):.2f}°; tilt offset {solution.tilt_offset_deg:.2f}°; "
        f"{int(solution.kept_points.sum())} points kept, {solution.rejected_points} rejected, "
        f"{solution.rejected_observations} observations rejected"
    )
    return new


def plot_alignment(series: TiltSeries, context: ProcessContext, title: str) -> None:
    """PNG plots of the residual per tilt (when known) and of the shifts per tilt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aligned = [t for t in series.tilts if not t.excluded and t.alignment is not None]
    tilts = np.array([t.tilt_deg for t in aligned])
    order = np.argsort(tilts)
    shifts = np.array([[t.alignment.shift_x_a, t.alignment.shift_y_a] for t in aligned])[order]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(tilts[order], shifts[:, 0], "o-", ms=3, label="shift x")
    axes.plot(tilts[order], shifts[:, 1], "s-", ms=3, label="shift y")
    axes.set_xlabel("tilt (°)")
    axes.set_ylabel("shift (Å)")
    axes.set_title(f"{series.name}: {title} shifts")
    axes.legend()
    figure.tight_layout()
    figure.savefig(context.output_path(f"{series.name}_shifts.png"), dpi=90)
    plt.close(figure)
    residuals = [t.alignment.residual_a for t in aligned]
    if all(r is None for r in residuals):
        return
    values = np.array([np.nan if r is None else r / 10 for r in residuals])[order]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.bar(tilts[order], values, width=2.0)
    mean_nm = (series.alignment_residual_a or np.nan) / 10
    axes.axhline(mean_nm, color="k", lw=1, ls="--", label=f"mean {mean_nm:.2f} nm")
    axes.set_xlabel("tilt (°)")
    axes.set_ylabel("mean residual (nm)")
    axes.set_title(f"{series.name}: {title} residual per tilt")
    axes.legend()
    figure.tight_layout()
    figure.savefig(context.output_path(f"{series.name}_residuals.png"), dpi=90)
    plt.close(figure)


class AlignXcorr(Protocol):
    """Coarse alignment: chained cross-correlation of neighbouring tilts, cosine-stretched.

    Keeps the nominal tilt angles and tilt axis; solves only the shifts. A good start for
    align.fiducial or align.patch, or enough for a quick look at a tomogram.
    """

    name = "align.xcorr"
    label = "Coarse alignment (cross-correlation)"
    Params = XcorrParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series to align")}
    outputs = {"tilt_series": Output(TiltSeries, help="the series with coarse alignment")}
    citations = _CITATIONS

    def process(self, item: TiltSeries, params: XcorrParams, context: ProcessContext
                ) -> dict[str, Any]:
        stack, indices = load_stack(item, context)
        tilts, z_rot = nominal_geometry(item, indices)
        shifts = coarse_shifts_full_px(stack, tilts, z_rot, params.max_size_px)
        new = item.model_copy(deep=True)
        for k, i in enumerate(indices):
            new.tilts[i].alignment = TiltAlignment(
                y_tilt_deg=float(tilts[k]), z_rot_deg=z_rot,
                shift_x_a=float(shifts[k, 0] * item.pixel_size_a),
                shift_y_a=float(shifts[k, 1] * item.pixel_size_a))
        new.alignment_residual_a = None
        context.log(f"coarse shifts of {len(indices)} tilts, largest "
                    f"{np.abs(shifts).max() * item.pixel_size_a:.0f} Å")
        context.log("this is a coarse alignment: shifts only, at the nominal tilt angles and "
                    "axis, chained between neighbours (errors of several px at high tilt are "
                    "usual in thick specimens); refine it with align.patch or align.fiducial")
        plot_alignment(new, context, "xcorr")
        return {"tilt_series": new}


class AlignFiducial(Protocol):
    """Gold-bead alignment: detect beads, track them from 0° outwards, solve the projection
    model (shifts, tilt axis, tilt offset, magnification, 3D bead positions), drop outliers."""

    name = "align.fiducial"
    label = "Fiducial alignment (gold beads)"
    Params = FiducialParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series with gold beads")}
    outputs = {"tilt_series": Output(TiltSeries, help="the series with its alignment")}
    citations = _CITATIONS

    def process(self, item: TiltSeries, params: FiducialParams, context: ProcessContext
                ) -> dict[str, Any]:
        stack, indices = load_stack(item, context)
        tilts, z_rot = nominal_geometry(item, indices)
        diameter_px = params.bead_diameter_a / item.pixel_size_a
        if diameter_px < 2.0:
            raise ItemError(f"{item.name}: beads of {params.bead_diameter_a} Å are "
                            f"{diameter_px:.1f} px at {item.pixel_size_a} Å/px; use a less "
                            f"binned series (beads need ≥ 2 px)")
        try:
            result = align_with_beads(
                stack, tilts, z_rot, diameter_px, threshold=params.detection_threshold,
                tilt_offset_method=params.tilt_offset_method, polarity=params.bead_polarity,
                z_rot_mode=params.tilt_axis_mode,
                solve_magnification=params.solve_magnification, outlier_k=params.outlier_k)
        except NoBeadsError as error:
            raise ItemError(f"{item.name}: no usable gold beads: {error}. For a sample without "
                            f"beads use align.patch (marker-free)") from None
        except ValueError as error:
            raise ItemError(f"{item.name}: {error}") from None
        new = attach_solution(item, indices, result, context)
        solution = result.solution
        new.fiducials_a = (solution.points_px[solution.kept_points] * item.pixel_size_a).tolist()
        plot_alignment(new, context, "fiducial")
        return {"tilt_series": new}


class AlignPatch(Protocol):
    """Marker-free alignment: patches tracked by cross-correlation between neighbouring tilts,
    chained into tracks and solved with the same projection model as align.fiducial (tilt
    axis, tilt angles, shifts); the shifts are then refined by projection matching."""

    name = "align.patch"
    label = "Patch-tracking alignment (marker-free)"
    Params = PatchParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series to align")}
    outputs = {"tilt_series": Output(TiltSeries, help="the series with its alignment")}
    citations = _CITATIONS

    def process(self, item: TiltSeries, params: PatchParams, context: ProcessContext
                ) -> dict[str, Any]:
        stack, indices = load_stack(item, context)
        tilts, z_rot = nominal_geometry(item, indices)
        factor = max(1, int(np.ceil(max(stack.shape[1:]) / params.max_size_px)))
        if params.patch_size_a is None:
            patch_px = min(stack.shape[1:]) // factor // 4
        else:
            patch_px = int(round(params.patch_size_a / (item.pixel_size_a * factor)))
        patch_px = max(16, patch_px + patch_px % 2)
        start = None
        if item.is_aligned:  # e.g. align.xcorr: one more start, judged like the others
            start = np.array([[a.shift_x_a, a.shift_y_a] if (a := item.tilts[i].alignment)
                              else [0.0, 0.0] for i in indices]) / item.pixel_size_a
        try:
            result = align_with_patches(
                stack, tilts, z_rot, patch_size_px=patch_px, max_size_px=params.max_size_px,
                min_strength=params.min_strength, tilt_offset_method=params.tilt_offset_method,
                z_rot_mode=params.tilt_axis_mode, solve_magnification=params.solve_magnification,
                outlier_k=params.outlier_k, refine_rounds=params.refine_rounds,
                start_shifts_px=start,
                refine_thickness_px=REFINE_SLAB_FRACTION * params.specimen_thickness_a
                / item.pixel_size_a)
        except ValueError as error:  # includes too few trackable patches
            raise ItemError(f"{item.name}: {error}") from None
        new = attach_solution(item, indices, result, context)
        plot_alignment(new, context, "patch")
        return {"tilt_series": new}


class ApplyAlignment(Protocol):
    """Write an aligned stack (tilt axis along Y, shifts and rotation applied) for viewing.

    Alignment stays as parameters everywhere else; this resamples images only when asked.
    """

    name = "tiltseries.apply_alignment"
    label = "Write aligned stack"
    Params = ApplyParams
    inputs = {"tilt_series": Input(TiltSeries, help="aligned tilt series")}
    outputs = {"tilt_series": Output(TiltSeries, help="series pointing at the aligned stack")}

    def process(self, item: TiltSeries, params: ApplyParams, context: ProcessContext
                ) -> dict[str, Any]:
        if not item.is_aligned:
            raise ItemError(f"{item.name}: has no alignment; run align.xcorr, align.fiducial "
                            f"or align.patch first")
        stack, indices = load_stack(item, context)
        pixel_size = item.pixel_size_a
        aligned = []
        for k, i in enumerate(indices):
            a = item.tilts[i].alignment
            shift_px = np.array([a.shift_x_a, a.shift_y_a]) / pixel_size
            image = to_specimen_frame(stack[k], a.z_rot_deg, shift_px, a.magnification)
            aligned.append(_bin(image, params.binning))
        out = context.output_path(f"{item.name}_aligned.mrc")
        write_mrc(out, np.stack(aligned), pixel_size * params.binning, stack=True)
        new = item.model_copy(deep=True)
        new.tilts = [new.tilts[i] for i in indices]
        for k, tilt in enumerate(new.tilts):
            old = tilt.alignment
            tilt.image_path, tilt.image_index = context.relative(out), k
            tilt.even_path = tilt.odd_path = None
            tilt.alignment = TiltAlignment(y_tilt_deg=old.y_tilt_deg, x_tilt_deg=old.x_tilt_deg,
                                           residual_a=old.residual_a)
        new.acquisition = item.acquisition.model_copy(
            update={"pixel_size_a": pixel_size * params.binning, "tilt_axis_deg": 0.0})
        new.image_size_xy = (aligned[0].shape[1], aligned[0].shape[0])
        context.log(f"aligned stack of {len(indices)} tilts, tilt axis along Y, "
                    f"binning {params.binning}")
        return {"tilt_series": new}


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    from tomoweave.algorithms.alignment.xcorr import bin_image

    return bin_image(image, factor)
