"""ctf.estimate (per-tilt CTF of tilted images) and ctf.assess (the CTF assistant)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.ctf_assessment import CtfAssessment, apply_overrides, assess_ctf
from tomoweave.algorithms.ctf_estimation import CtfFit, estimate_ctf
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.geometry.projection import tilt_axis_to_z_rot_deg
from tomoweave.model import CtfTilt, TiltImage, TiltSeries
from tomoweave.protocols.motion import save_figure
from tomoweave.protocols.preprocess import exclude_tilts, read_tilt_image, select_tilts


class CtfParams(BaseModel):
    min_defocus_a: float = param(3000.0, gt=0, unit="Å", help="lowest defocus searched")
    max_defocus_a: float = param(80000.0, gt=0, unit="Å", help="highest defocus searched")
    min_resolution_a: float = param(30.0, gt=0, unit="Å", help="low-resolution end of the fit "
                                    "(moved lower automatically for coarse pixel sizes)")
    max_resolution_a: float = param(5.0, gt=0, unit="Å", help="high-resolution end of the fit "
                                    "(images are Fourier-binned to suit it)")
    tile_px: int = param(512, ge=64, le=2048, unit="px", help="tile size for the power spectra")
    fit_astigmatism: bool = param(True, help="fit astigmatism (else U = V)")
    fit_phase_shift: bool = param(False, help="fit a phase-plate phase shift")
    use_nominal_defocus: bool = param(True, help="let the mdoc's target defocus break near-ties "
                                      "of the wide search (a wrong value does no harm)")


class CtfEstimate(Protocol):
    """Per-tilt defocus U/V, astigmatism, phase shift and fit resolution from tile power spectra,
    with the defocus gradient across the tilt axis of tilted images taken into account."""

    name = "ctf.estimate"
    label = "CTF estimation"
    Params = CtfParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series (or single micrographs as "
                                   "one-tilt series)")}
    outputs = {"tilt_series": Output(TiltSeries, help="tilt series with a CTF per tilt")}
    citations = [
        "Rohou & Grigorieff (2015) J Struct Biol 192:216-221. doi:10.1016/j.jsb.2015.08.008",
        "Elferich et al. (2024) eLife 13:RP97227 (CTFFIND5, tilted samples). "
        "doi:10.7554/eLife.97227",
    ]

    def process(self, item: TiltSeries, params: CtfParams,
                context: ProcessContext) -> dict[str, Any]:
        acquisition = item.acquisition
        out = item.model_copy(deep=True)
        fits: list[CtfFit] = []
        diagnostic = context.output_path(f"{item.name}_ctf.png")
        for tilt, new_tilt in zip(item.tilts, out.tilts, strict=True):
            image = read_tilt_image(context, item, tilt)
            tilt_deg, z_rot_deg = _tilt_geometry(item, tilt)
            try:
                fit = estimate_ctf(
                    image, item.pixel_size_a, acquisition.voltage_kv,
                    acquisition.spherical_aberration_mm, acquisition.amplitude_contrast,
                    tilt_deg=tilt_deg, z_rot_deg=z_rot_deg,
                    nominal_defocus_a=tilt.nominal_defocus_a if params.use_nominal_defocus
                    else None,
                    min_defocus_a=params.min_defocus_a, max_defocus_a=params.max_defocus_a,
                    min_resolution_a=params.min_resolution_a,
                    max_resolution_a=params.max_resolution_a,
                    tile_px=params.tile_px, fit_astigmatism=params.fit_astigmatism,
                    fit_phase_shift=params.fit_phase_shift)
            except ValueError as error:
                raise ItemError(f"{item.name}: tilt {tilt.tilt_deg:g}°: {error}") from error
            fits.append(fit)
            new_tilt.ctf = CtfTilt(
                defocus_u_a=round(fit.defocus_u_a, 1), defocus_v_a=round(fit.defocus_v_a, 1),
                astigmatism_angle_deg=round(fit.astigmatism_angle_deg, 2),
                phase_shift_deg=round(fit.phase_shift_deg, 2),
                fit_resolution_a=round(fit.fit_resolution_a, 2), score=round(fit.score, 4),
                diagnostic_path=context.relative(diagnostic), reliable=bool(fit.reliable))
            if not fit.reliable:
                context.warn(f"{item.name} tilt {tilt.tilt_deg:g}°: no usable Thon rings "
                            f"(no defocus stands out of the search); "
                            f"{'nominal defocus kept' if tilt.nominal_defocus_a else 'unreliable'}")
            context.log(f"{item.name} tilt {tilt.tilt_deg:g}°: defocus U {fit.defocus_u_a:.0f} "
                        f"V {fit.defocus_v_a:.0f} Å, angle {fit.astigmatism_angle_deg:.1f}°, "
                        f"fit to {fit.fit_resolution_a:.1f} Å, score {fit.score:.3f}")
        plot_ctf_montage(item, fits, diagnostic)
        return {"tilt_series": out}


def _tilt_geometry(series: TiltSeries, tilt: TiltImage) -> tuple[float, float]:
    """Tilt angle and in-plane rotation: the alignment's when known, else the nominal ones."""
    if tilt.alignment is not None:
        return tilt.alignment.y_tilt_deg, tilt.alignment.z_rot_deg
    return tilt.tilt_deg, tilt_axis_to_z_rot_deg(series.acquisition.tilt_axis_deg)


class AssessParams(BaseModel):
    tolerance: float = param(0.2, gt=0, le=5, help="largest relative deviation of defocus U or "
                             "V from the series mean (0.2 = 20 %)")
    max_fit_resolution_a: float = param(0.0, ge=0, unit="Å", help="flag tilts whose fit "
                                        "resolution is worse than this (0: off)")
    keep_tilts: list[float] = param([], help="tilts to keep whatever the rules say (angles in ° "
                                    "or indices, see 'by')")
    drop_tilts: list[float] = param([], help="tilts to drop whatever the rules say")
    series: list[str] = param([], help="names of the series keep/drop apply to (empty: every "
                              "series); the others follow the rules only")
    by: Literal["angle", "index"] = param("angle", choices=["angle", "index"],
                                          help="whether keep/drop list angles or 0-based indices")
    mode: Literal["remove", "mark"] = param("remove", choices=["remove", "mark"], help="remove "
                                            "flagged tilts from the good set or mark them excluded")


class CtfAssess(Protocol):
    """The CTF assistant: flag tilts whose defocus deviates from the series mean or whose fit is
    poor, split each series into a good set and a bad set (the flagged tilts), and plot it."""

    name = "ctf.assess"
    label = "CTF assistant"
    Params = AssessParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series with CTF estimates")}
    outputs = {
        "good": Output(TiltSeries, help="series without the flagged tilts"),
        "bad": Output(TiltSeries, help="the flagged tilts of each series"),
    }

    def process(self, item: TiltSeries, params: AssessParams,
                context: ProcessContext) -> dict[str, Any]:
        missing = [t.tilt_deg for t in item.tilts if t.ctf is None]
        if missing:
            raise ItemError(f"{item.name}: tilts {missing} have no CTF (run ctf.estimate first)")
        ctfs = [t.ctf for t in item.tilts]
        angles = [t.tilt_deg for t in item.tilts]
        chosen = not params.series or item.name in params.series  # a choice is per series
        try:
            verdict = apply_overrides(
                assess_ctf([c.defocus_u_a for c in ctfs], [c.defocus_v_a for c in ctfs],
                           [c.fit_resolution_a for c in ctfs], params.tolerance,
                           params.max_fit_resolution_a or None,
                           reliable=[c.reliable for c in ctfs]),
                angles, params.keep_tilts if chosen else (),
                params.drop_tilts if chosen else (), params.by)
        except ValueError as error:
            raise ItemError(f"{item.name}: {error}") from error
        if not any(c.reliable for c in ctfs):
            context.warn(f"{item.name}: no tilt shows Thon rings (pixel size "
                         f"{item.pixel_size_a:g} Å too coarse, or no signal): every defocus is "
                         f"the nominal one, so no tilt is judged by its CTF")
        flagged = np.nonzero(verdict.flagged)[0].tolist()
        for index in flagged:
            context.log(f"{item.name} tilt {angles[index]:g}° flagged: "
                        f"{'; '.join(verdict.reasons[index]) or 'by the user'}")
        context.log(f"{item.name}: {len(flagged)} of {len(angles)} tilts flagged; mean defocus "
                    f"U {verdict.mean_defocus_u_a:.0f} V {verdict.mean_defocus_v_a:.0f} Å")
        plot_assessment(item, verdict, params, context.output_path(f"{item.name}_ctf_assess.png"))
        good = exclude_tilts(item, flagged, params.mode)
        bad = select_tilts(item, flagged)
        return {"good": [good] if good is not None else [], "bad": [bad] if bad is not None else []}


def plot_assessment(series: TiltSeries, verdict: CtfAssessment, params: AssessParams,
                    path) -> None:
    """Defocus U/V vs tilt angle with the tolerance band, fit resolution vs tilt; flags marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort([t.tilt_deg for t in series.tilts])  # lines follow the tilt angle
    tilts = [series.tilts[i] for i in order]
    angles = np.array([t.tilt_deg for t in tilts])
    u = np.array([t.ctf.defocus_u_a for t in tilts]) / 1e4
    v = np.array([t.ctf.defocus_v_a for t in tilts]) / 1e4
    resolution = np.array([np.nan if t.ctf.fit_resolution_a is None else t.ctf.fit_resolution_a
                           for t in tilts])
    flagged = verdict.flagged[order]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    mean = 0.5 * (verdict.mean_defocus_u_a + verdict.mean_defocus_v_a) / 1e4
    top.axhspan(mean * (1 - params.tolerance), mean * (1 + params.tolerance), color="0.92",
                label=f"±{100 * params.tolerance:g} % of the mean")
    top.plot(angles, u, "o-", ms=4, lw=0.8, label="defocus U")
    top.plot(angles, v, "s-", ms=3, lw=0.8, label="defocus V")
    top.plot(angles[flagged], u[flagged], "x", color="red", ms=11, mew=2, label="flagged")
    top.set_ylabel("defocus (µm)")
    top.set_title(f"{series.name}: CTF assistant — {int(flagged.sum())} of {len(angles)} tilts "
                  f"flagged", fontsize=10)
    top.legend(fontsize=8, loc="best")
    bottom.plot(angles, resolution, "o-", ms=4, lw=0.8, color="tab:green")
    bottom.plot(angles[flagged], resolution[flagged], "x", color="red", ms=11, mew=2)
    if params.max_fit_resolution_a:
        bottom.axhline(params.max_fit_resolution_a, color="red", ls="--", lw=0.8,
                       label="fit-resolution limit")
        bottom.legend(fontsize=8)
    if not np.isfinite(resolution).any():
        bottom.text(0.5, 0.5, "no fit resolutions in the input", ha="center",
                    transform=bottom.transAxes)
    bottom.set_xlabel("tilt angle (°)")
    bottom.set_ylabel("fit resolution (Å)")
    figure.tight_layout()
    save_figure(figure, path)


def plot_ctf_montage(series: TiltSeries, fits: list[CtfFit], path) -> None:
    """Per tilt: power spectrum (left half) against the fitted CTF² (right half); plus the
    equiphase-averaged 1D profile of the tilt nearest 0°."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(fits)
    columns = int(np.ceil(np.sqrt(count + 1)))
    rows = int(np.ceil((count + 1) / columns))
    cell = max(2.0, 6.0 / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(cell * columns, 1.08 * cell * rows),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, tilt, fit in zip(axes.flat, series.tilts, fits, strict=False):
        picture = fit.diagnostics["spectrum_2d"]
        limit = np.percentile(np.abs(picture[picture != 0]), 98) if picture.any() else 1.0
        axis.imshow(picture, cmap="gray", vmin=-limit, vmax=limit, origin="lower")
        axis.set_title(f"{tilt.tilt_deg:g}°: {0.5e-4 * (fit.defocus_u_a + fit.defocus_v_a):.2f}"
                       f" µm, {fit.fit_resolution_a:.0f} Å", fontsize=7)
    central = int(np.argmin([abs(t.tilt_deg) for t in series.tilts]))
    profile_axis = axes.flat[count]
    profile_axis.axis("on")
    diagnostics = fits[central].diagnostics
    k = diagnostics["k_inv_a"]
    data, model = diagnostics["profile_data"], diagnostics["profile_model"]
    scale = np.polyfit(model, data, 1) if np.ptp(model) > 0 else (1.0, 0.0)
    profile_axis.plot(k, data, lw=0.7, label="data")
    profile_axis.plot(k, np.polyval(scale, model), lw=0.9, label="CTF² fit")
    profile_axis.set_xlabel("1/Å", fontsize=7)
    profile_axis.tick_params(labelsize=6)
    profile_axis.set_title(f"equiphase average, {series.tilts[central].tilt_deg:g}°", fontsize=7)
    profile_axis.legend(fontsize=6)
    figure.suptitle(f"{series.name}: spectra (left) vs fitted CTF (right)", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
