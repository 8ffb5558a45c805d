"""motion.correct: align the frames of every tilt movie, dose-weight, sum, and split even/odd."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.motion import correct_motion
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.model import TiltImage, TiltSeries


class MotionParams(BaseModel):
    bfactor_px2: float = param(100.0, ge=0, unit="px²", help="B-factor of the global alignment "
                               "(in pixels², as RELION and MotionCor2 give it)")
    patches: int = param(5, ge=0, le=12, help="patches per side for local motion (0: global "
                         "only; skipped automatically when frames are too small or the local "
                         "motion is not significant)")
    patch_bfactor_px2: float = param(50.0, ge=0, unit="px²", help="B-factor of the patch "
                                     "alignment")
    max_shift_a: float = param(1000.0, gt=0, unit="Å", help="largest frame drift searched")
    dose_weighting: bool = param(True, help="weight frequencies by accumulated exposure "
                                 "(pre-exposure of the tilt + frames before)")
    trajectory_degree: int = param(3, ge=0, le=8, help="degree of the polynomial in time fitted "
                                   "to each global drift trajectory (0: no smoothing)")
    dose_per_tilt_e_a2: float = param(0.0, ge=0, unit="e/Å²", help="dose of one tilt if the "
                                      "acquisition does not say (0: take it from the acquisition)")


class MotionCorrect(Protocol):
    """Align movie frames: global drift against the running sum of the other frames, then
    patch-based local motion; dose-weighted sum plus even/odd frame sums per tilt."""

    name = "motion.correct"
    label = "Motion correction"
    Params = MotionParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series whose tilts have movies")}
    outputs = {"tilt_series": Output(TiltSeries, help="motion-corrected tilt series with "
                                     "even/odd sums and per-tilt drift")}
    citations = [
        "Zheng et al. (2017) Nat Methods 14:331-332. doi:10.1038/nmeth.4193",
        "Grant & Grigorieff (2015) eLife 4:e06980. doi:10.7554/eLife.06980",
    ]

    def process(self, item: TiltSeries, params: MotionParams,
                context: ProcessContext) -> dict[str, Any]:
        dose_per_tilt = params.dose_per_tilt_e_a2 or item.acquisition.dose_per_tilt_e_a2
        sums: dict[str, list[np.ndarray]] = {"image": [], "even": [], "odd": []}
        out = item.model_copy(deep=True)
        pixel_size_a = item.pixel_size_a
        for tilt, new_tilt in zip(item.tilts, out.tilts, strict=True):
            frames = read_movie(context, item, tilt)
            if pixel_size_a <= 0:
                raise ItemError(f"{item.name}: pixel size unknown")
            result = correct_motion(
                frames, pixel_size_a, dose_per_tilt / len(frames), tilt.pre_exposure_e_a2,
                item.acquisition.voltage_kv, params.bfactor_px2, params.patches,
                params.patch_bfactor_px2, params.max_shift_a, params.dose_weighting,
                params.trajectory_degree)
            sums["image"].append(result.aligned_sum)
            sums["even"].append(result.even_sum)
            sums["odd"].append(result.odd_sum)
            new_tilt.drift_px = np.round(result.drift_px, 4).tolist()
            total = float(np.linalg.norm(np.diff(result.drift_px, axis=0), axis=1).sum())
            context.log(f"{item.name} tilt {tilt.tilt_deg:g}°: {len(frames)} frames, drift "
                        f"path {total:.2f} px, local residual {result.local_rms_px:.2f} px, "
                        f"{result.iterations} iterations{'; ' if result.notes else ''}"
                        f"{'; '.join(result.notes)}")
        for kind, images in sums.items():
            suffix = "" if kind == "image" else f"_{kind}"
            path = write_mrc(context.output_path(f"{item.name}{suffix}.mrc"), np.stack(images),
                             pixel_size_a, stack=True)
            for index, tilt in enumerate(out.tilts):
                setattr(tilt, f"{kind}_path", context.relative(path))
                setattr(tilt, f"{kind}_index", index)
        ny, nx = sums["image"][0].shape
        out.image_size_xy = (nx, ny)
        plot_drift(out, context.output_path(f"{item.name}_drift.png"))
        return {"tilt_series": out}


def read_movie(context: ProcessContext, series: TiltSeries, tilt: TiltImage) -> np.ndarray:
    """Frames [n, y, x] of one tilt's movie, checked against the mdoc's frame count."""
    label = f"{series.name}: tilt {tilt.tilt_deg:g}°"
    if not tilt.movie_path:
        raise ItemError(f"{label} has no movie (movie_path); motion.correct needs frame stacks")
    path = context.resolve(tilt.movie_path)
    try:
        frames, _ = read_mrc(path)
    except MrcError as error:
        raise ItemError(f"{label}: {error}") from error
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if tilt.frame_count is not None and frames.shape[0] < tilt.frame_count:
        raise ItemError(f"{path}: movie has {frames.shape[0]} frames but the mdoc says "
                        f"{tilt.frame_count} ({label})")
    if frames.shape[0] < 2:
        raise ItemError(f"{path}: movie has {frames.shape[0]} frame; alignment needs at least 2")
    if not np.isfinite(frames).all():
        raise ItemError(f"{path}: movie contains NaN or infinite values ({label})")
    if not frames.any():
        raise ItemError(f"{path}: movie is all zeros ({label})")
    return frames


def plot_drift(series: TiltSeries, path) -> None:
    """Drift traces of all tilts (coloured by tilt angle) and total drift vs tilt angle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = np.array([t.tilt_deg for t in series.tilts])
    span = max(np.ptp(angles), 1e-6)
    figure, (traces, totals) = plt.subplots(1, 2, figsize=(10, 4.2))
    colormap = plt.get_cmap("coolwarm")
    path_lengths = []
    for tilt in series.tilts:
        drift = np.asarray(tilt.drift_px or [[0.0, 0.0]])
        colour = colormap((tilt.tilt_deg - angles.min()) / span)
        traces.plot(drift[:, 0], drift[:, 1], "-", color=colour, lw=1)
        traces.plot(drift[-1, 0], drift[-1, 1], "o", color=colour, ms=2)
        path_lengths.append(float(np.linalg.norm(np.diff(drift, axis=0), axis=1).sum()))
    traces.set_xlabel("drift x (px)")
    traces.set_ylabel("drift y (px)")
    traces.set_title(f"{series.name}: frame drift per tilt (blue -{abs(angles.min()):g}° "
                     f"… red {angles.max():g}°)", fontsize=9)
    traces.set_aspect("equal", adjustable="datalim")
    totals.plot(angles, path_lengths, "o")
    totals.set_xlabel("tilt angle (°)")
    totals.set_ylabel("drift path length (px)")
    totals.set_title("total drift per tilt", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def save_figure(figure, path) -> None:
    """Write a matplotlib figure as PNG atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp.png")
    try:
        figure.savefig(temporary, dpi=90)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if temporary.exists():
            temporary.unlink()
