"""simulate: tilt series with known ground truth, made by tomoweave.sim.

Each task simulates one series into the run's outputs folder: the stack (acquisition order), the
SerialEM .mdoc, the movies when asked for, and ``truth/NAME.json`` with the noise-free volume and
projections. The ``tilt_series`` output holds what an import would give (no alignment, no CTF:
those are what later steps must find); ``true_particles`` holds the particles as placed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.engine import InputError, Output, ProcessContext, Protocol, Task, param
from tomoweave.model import Particle, TiltImage, TiltSeries
from tomoweave.sim import SIM_PRESETS, resolve_config, simulate_series
from tomoweave.sim.config import SimConfig
from tomoweave.sim.dataset import SimulatedSeries, series_name
from tomoweave.sim.truth import SeriesTruth

OVERRIDES = ("pixel_size_a", "image_size_px", "thickness_a", "particles_on", "beads_on",
             "membranes_on", "noise_on", "movies_on", "n_frames", "tilt_scheme", "tilt_min_deg",
             "tilt_max_deg", "tilt_step_deg", "misalignment", "defocus_a", "defocus_range_a",
             "dose_per_tilt_e_a2", "ctf_on", "damping_on", "tilt_axis_deg", "xrays_per_tilt")


class SimulateParams(BaseModel):
    preset: Literal["tiny", "test", "demo", "sta_test", "sta", "sta_ctf_test", "sta_ctf"] = param(
        "test", choices=list(SIM_PRESETS), help="size of the data set: tiny (engine tests), "
        "test (algorithm tests), demo; for subtomogram averaging sta_test / sta (ribosomes, "
        "10 Å/px) and sta_ctf_test / sta_ctf (strong CTF: 4 Å/px, defocus 3–5 µm)")
    seed: int = param(0, ge=0, help="random seed; the same seed gives the same data")
    n_series: int | None = param(None, ge=1, le=100, help="number of tilt series "
                                 "(default: the preset's)")
    pixel_size_a: float | None = param(None, gt=0, unit="Å", help="pixel size")
    image_size_px: int | None = param(None, ge=16, le=4096, unit="px", help="image width=height")
    thickness_a: float | None = param(None, gt=0, unit="Å", help="ice thickness")
    particles_on: bool | None = param(None, help="place particles")
    exclude_templates: list[str] = param([], help="templates to leave out (4v4r, 1bxn, ...)")
    beads_on: bool | None = param(None, help="place gold fiducial beads")
    membranes_on: bool | None = param(None, help="place vesicles")
    noise_on: bool | None = param(None, help="add shot noise")
    movies_on: bool | None = param(None, help="also write each tilt as a movie with drift")
    n_frames: int | None = param(None, ge=1, help="frames per movie")
    tilt_scheme: Literal["dose_symmetric", "bidirectional"] | None = param(
        None, help="order of exposure")
    tilt_min_deg: float | None = param(None, ge=-85, le=85, unit="°", help="lowest tilt")
    tilt_max_deg: float | None = param(None, ge=-85, le=85, unit="°", help="highest tilt")
    tilt_step_deg: float | None = param(None, gt=0, unit="°", help="tilt increment")
    tilt_axis_deg: float | None = param(None, unit="°", help="nominal tilt-axis angle")
    misalignment: float | None = param(None, ge=0, help="scale of the shifts, tilt-axis error "
                                       "and tilt offset (0 = perfectly aligned)")
    defocus_a: float | None = param(None, gt=0, unit="Å", help="nominal defocus (underfocus)")
    defocus_range_a: tuple[float, float] | None = param(
        None, unit="Å", help="draw each series' nominal defocus from this range (low, high)")
    dose_per_tilt_e_a2: float | None = param(None, gt=0, unit="e/Å²", help="dose per tilt")
    ctf_on: bool | None = param(None, help="apply the CTF")
    xrays_per_tilt: int | None = param(None, ge=0, help="single-pixel X-ray hits per tilt")
    damping_on: bool | None = param(None, help="apply exposure-dependent damping")


def sim_config(params: SimulateParams) -> SimConfig:
    """The simulator settings these parameters ask for (preset + the overrides that are set)."""
    overrides: dict[str, Any] = {k: getattr(params, k) for k in OVERRIDES
                                 if getattr(params, k) is not None}
    if params.n_series is not None:
        overrides["n_series"] = params.n_series
    if params.exclude_templates:
        counts = dict(SIM_PRESETS[params.preset].get("particles", SimConfig().particles))
        for name in params.exclude_templates:
            counts[name] = 0
        overrides["particles"] = counts
    return resolve_config(params.preset, **overrides)


class Simulate(Protocol):
    """Simulate tilt series (and movies) of particles, beads and vesicles in ice, with ground truth."""

    name = "simulate"
    label = "Simulate tilt series"
    Params = SimulateParams
    outputs = {
        "tilt_series": Output(TiltSeries, help="simulated tilt series, as an import gives them"),
        "true_particles": Output(Particle, help="particles as placed (ground truth)"),
    }
    citations = [
        "Hagen WJH, Wan W, Briggs JAG (2017) Implementation of a cryo-electron tomography "
        "tilt-scheme optimized for high resolution subtomogram averaging. J Struct Biol "
        "197:191-198. doi:10.1016/j.jsb.2016.06.007",
        "Grant T, Grigorieff N (2015) Measuring the optimal exposure for single particle cryo-EM "
        "using a 2.6 Å reconstruction of rotavirus VP6. eLife 4:e06980. doi:10.7554/eLife.06980",
    ]

    def plan(self, params: SimulateParams, inputs: dict[str, Any]) -> list[Task]:
        try:
            config = sim_config(params)
        except ValueError as error:
            raise InputError(f"simulate: {error}") from None
        return [Task(key=series_name(config, index), payload={"index": index})
                for index in range(config.n_series)]

    def process(self, payload: dict, params: SimulateParams,
                context: ProcessContext) -> dict[str, Any]:
        config = sim_config(params)
        out_dir = context.output_path(f"{series_name(config, int(payload['index']))}.mrc").parent
        result = simulate_series(config, int(payload["index"]), params.seed, out_dir,
                                 params.preset)
        truth = result.truth()
        _overview_png(result, truth, context.output_path(f"{truth.name}_overview.png"))
        context.log(f"{truth.name}: {len(truth.tilts)} tilts, {len(truth.placed_particles)} "
                    f"particles, {len(truth.beads_a)} beads, {len(truth.vesicles)} vesicles; "
                    f"truth in {context.relative(result.truth_path)}")
        return {"tilt_series": tilt_series_item(result, truth, context),
                "true_particles": truth.particles()}


def tilt_series_item(result: SimulatedSeries, truth: SeriesTruth,
                     context: ProcessContext) -> TiltSeries:
    """The tilt series as an import of the .mdoc would describe it (stack order = acquisition)."""
    stack = context.relative(result.stack_path)
    movies = {path.name: context.relative(path) for path in result.frame_paths}
    tilts = [
        TiltImage(tilt_deg=t.nominal_tilt_deg, acquisition_order=t.acquisition_order,
                  pre_exposure_e_a2=t.pre_exposure_e_a2, image_path=stack,
                  image_index=t.stack_index, movie_path=movies.get(t.movie_file or ""),
                  frame_count=len(t.drift_px) if t.movie_file and t.drift_px else None,
                  nominal_defocus_a=truth.nominal_defocus_a)
        for t in truth.tilts
    ]
    return TiltSeries(name=truth.name, acquisition=truth.acquisition,
                      image_size_xy=truth.image_size_xy, tilts=tilts,
                      mdoc_path=context.relative(result.mdoc_path))


def _overview_png(result: SimulatedSeries, truth: SeriesTruth, path: Path) -> None:
    """Three tilts (first, lowest, highest) and a central slice of the true volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomoweave.formats.mrc import read_mrc

    stack, _ = read_mrc(result.stack_path)
    stack = stack.reshape(-1, *stack.shape[-2:])
    volume, _ = read_mrc(result.volume_path)
    nominal = np.array([t.nominal_tilt_deg for t in truth.tilts])
    picks = [0, int(np.argmin(nominal)), int(np.argmax(nominal))]
    figure, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for axis, index in zip(axes[:3], picks, strict=True):
        axis.imshow(stack[index], cmap="gray", origin="lower")  # y up, as every picture
        axis.set_title(f"{truth.name} tilt {nominal[index]:+.0f}° (slice {index})", fontsize=9)
    axes[3].imshow(volume[volume.shape[0] // 2], cmap="gray", origin="lower")
    axes[3].set_title("true volume, central XY slice", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
