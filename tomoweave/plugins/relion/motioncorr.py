"""relion.motioncorr: RELION's own motion correction (relion_run_motioncorr --use_own).

Each tilt's movie is linked into the task's work folder and listed in a RELION 3.1 movies
STAR; RELION writes one aligned sum and one ``.star`` per movie, whose ``data_global_shift``
(``rlnMicrographShiftX/Y``, unbinned pixels, the shift that aligns each frame) gives the
tilt's drift: ``drift_px = -shift`` (the frame moved the other way). The sums become the
series' stack; the tilt keeps its movie.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.formats.star_io import (
    StarFormatError,
    numeric_column,
    read_star_blocks,
    require_columns,
    write_star_blocks,
)
from tomoweave.model import TiltSeries
from tomoweave.plugins.relion.programs import RELION_MOTIONCORR
from tomoweave.plugins.relion.reconstruct import CITATION_RELION
from tomoweave.protocols.motion import plot_drift

CITATION_MOTION = ("Zivanov J, Nakane T, Scheres SHW (2019) A Bayesian approach to beam-induced "
                   "motion correction in cryo-EM single-particle analysis. IUCrJ 6:5-17")


class RelionMotionParams(BaseModel):
    bfactor_px2: float = param(150.0, ge=0, unit="px²", help="B-factor of the alignment "
                               "(--bfactor, pixels²)")
    patches: int = param(1, ge=1, le=12, help="patches per side (--patch_x/--patch_y; 1: "
                         "global only)")
    dose_weighting: bool = param(True, help="dose-weight the sums (pre-exposure of the tilt "
                                 "+ frames before)")
    threads: int = param(1, ge=1, help="threads per movie (--j)")
    timeout_min: float | None = param(None, gt=0, unit="min",
                                      help="stop RELION after this long per series")


def movies_star(context: ProcessContext, item: TiltSeries) -> list[str]:
    """``movies.star`` with one line per tilt (movies linked into ``movies/``); the names."""
    folder = context.work_dir / "movies"
    folder.mkdir(exist_ok=True)
    names = []
    for index, tilt in enumerate(item.tilts):
        if not tilt.movie_path:
            raise ItemError(f"{item.name}: tilt {tilt.tilt_deg:g}° has no movie (movie_path)")
        source = context.resolve(tilt.movie_path)
        link = folder / f"{item.name}_{index:03d}{source.suffix}"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(source.resolve(), link)
        names.append(f"movies/{link.name}")
    acquisition = item.acquisition
    optics = pd.DataFrame([{
        "rlnOpticsGroupName": "opticsGroup1", "rlnOpticsGroup": 1,
        "rlnMicrographOriginalPixelSize": item.pixel_size_a,
        "rlnVoltage": acquisition.voltage_kv,
        "rlnSphericalAberration": acquisition.spherical_aberration_mm,
        "rlnAmplitudeContrast": acquisition.amplitude_contrast}])
    movies = pd.DataFrame({"rlnMicrographMovieName": names, "rlnOpticsGroup": 1})
    write_star_blocks(context.work_dir / "movies.star", {"optics": optics, "movies": movies})
    return names


def read_global_shifts(path: Path) -> np.ndarray:
    """(frames, 2) shifts x, y in pixels from a RELION motion-correction ``.star``."""
    blocks = read_star_blocks(path)
    if "global_shift" not in blocks:
        raise StarFormatError(f"{path.name}: no data_global_shift block")
    table = blocks["global_shift"]
    require_columns(table, ("rlnMicrographShiftX", "rlnMicrographShiftY"), path,
                    "global_shift", "the frame shifts")
    return np.stack([numeric_column(table, c, path, "global_shift").to_numpy(float)
                     for c in ("rlnMicrographShiftX", "rlnMicrographShiftY")], axis=1)


class RelionMotionCorr(Protocol):
    """relion_run_motioncorr --use_own: RELION's CPU motion correction of each tilt movie."""

    name = "relion.motioncorr"
    label = "RELION: motion correction"
    description = ("Aligns the frames of every tilt movie with RELION's own implementation "
                   "(relion_run_motioncorr --use_own), dose-weighted by the tilt's pre-exposure;"
                   " the sums become the tilt series' stack, RELION's shifts its drift.")
    citations = [CITATION_RELION, CITATION_MOTION]
    programs = (RELION_MOTIONCORR,)
    Params = RelionMotionParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series whose tilts have movies")}
    outputs = {"tilt_series": Output(TiltSeries, help="motion-corrected tilt series with "
                                     "per-tilt drift")}

    def process(self, item: TiltSeries, params: RelionMotionParams,
                context: ProcessContext) -> dict[str, Any]:
        names = movies_star(context, item)
        out = item.model_copy(deep=True)
        frames_of = [t.frame_count for t in item.tilts]
        dose = item.acquisition.dose_per_tilt_e_a2
        timeout = params.timeout_min * 60 if params.timeout_min else None
        sums = []
        for index, (tilt, name) in enumerate(zip(out.tilts, names, strict=True)):
            frames = frames_of[index] or _frame_count(context.work_dir / name)
            args = ["relion_run_motioncorr", "--i", "movies.star", "--o", "MotionCorr/",
                    "--use_own", "--j", str(params.threads), "--bfactor",
                    f"{params.bfactor_px2:g}", "--patch_x", str(params.patches), "--patch_y",
                    str(params.patches), "--only_do_unfinished", "--do_at_most", "1"]
            if params.dose_weighting and dose > 0:
                args += ["--dose_weighting", "--angpix", f"{item.pixel_size_a:g}",
                         "--voltage", f"{item.acquisition.voltage_kv:g}",
                         "--dose_per_frame", f"{dose / frames:g}",
                         "--preexposure", f"{tilt.pre_exposure_e_a2:g}"]
            context.run_command(args, cwd=context.work_dir, program=RELION_MOTIONCORR,
                                timeout_s=timeout)
            result = context.work_dir / "MotionCorr" / name
            try:
                shifts = read_global_shifts(result.with_suffix(".star"))
                image, _ = read_mrc(result.with_suffix(".mrc"))
            except (StarFormatError, MrcError) as error:
                raise ItemError(f"{item.name}: tilt {tilt.tilt_deg:g}°: RELION's result "
                                f"{error}") from None
            tilt.drift_px = np.round(-shifts, 4).tolist()
            sums.append(image.reshape(image.shape[-2:]))
            path = float(np.linalg.norm(np.diff(shifts, axis=0), axis=1).sum())
            context.log(f"{item.name} tilt {tilt.tilt_deg:g}°: {len(shifts)} frames, drift "
                        f"path {path:.2f} px (RELION)")
            context.progress((index + 1) / len(names), f"tilt {tilt.tilt_deg:g}°")
        stack = write_mrc(context.output_path(f"{item.name}.mrc"), np.stack(sums),
                          item.pixel_size_a, stack=True)
        for index, tilt in enumerate(out.tilts):
            tilt.image_path, tilt.image_index = context.relative(stack), index
        ny, nx = sums[0].shape
        out.image_size_xy = (nx, ny)
        plot_drift(out, context.output_path(f"{item.name}_drift.png"))
        return {"tilt_series": out}


def _frame_count(movie: Path) -> int:
    try:
        return int(read_mrc(movie)[0].shape[0])
    except MrcError as error:
        raise ItemError(str(error)) from None
