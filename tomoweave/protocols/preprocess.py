"""Tilt-series preprocessing: X-ray eraser, exposure (dose) filter, exclusion of views.

Every protocol keeps each tilt's alignment and CTF with the tilt, so the metadata stay consistent
with the remaining (or rewritten) images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.ctf_assessment import assess_ctf, resolve_tilts
from tomoweave.algorithms.preprocess import dose_filter_image, erase_xrays
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import MrcError, mmap_mrc, write_mrc
from tomoweave.model import TiltImage, TiltSeries

IMAGE_KINDS = ("image", "even", "odd")


def read_tilt_image(context: ProcessContext, series: TiltSeries, tilt: TiltImage,
                    kind: str = "image") -> np.ndarray:
    """One tilt's image (float32 [y, x]); raises ItemError naming the file and tilt if unusable."""
    stored = getattr(tilt, f"{kind}_path")
    index = getattr(tilt, f"{kind}_index")
    label = f"{series.name}: tilt {tilt.tilt_deg:g}°"
    if stored is None:
        raise ItemError(f"{label} has no {kind} image (movies only? run motion.correct first)")
    path = context.resolve(stored)
    try:
        with mmap_mrc(path) as mrc:
            data = mrc.data if mrc.data.ndim == 3 else mrc.data[np.newaxis]
            if index >= data.shape[0]:
                raise ItemError(f"{path}: has {data.shape[0]} slices, {label} needs slice {index}")
            image = np.array(data[index], dtype=np.float32)
    except MrcError as error:
        raise ItemError(f"{label}: {error}") from error
    if not np.isfinite(image).all():
        raise ItemError(f"{path} slice {index} ({label}): image contains NaN or infinite values")
    if not image.any():
        raise ItemError(f"{path} slice {index} ({label}): image is all zeros")
    return image


def rewrite_series(series: TiltSeries, context: ProcessContext,
                   transform: Callable[[np.ndarray, TiltImage, str], np.ndarray],
                   suffix: str) -> TiltSeries:
    """Apply ``transform(image, tilt, kind)`` to every tilt (and even/odd halves when all tilts
    have them), write one stack per kind, and point the tilts at the new slices."""
    out = series.model_copy(deep=True)
    for kind in IMAGE_KINDS:
        if kind != "image" and not all(getattr(t, f"{kind}_path") for t in series.tilts):
            continue
        stack = np.stack([transform(read_tilt_image(context, series, tilt, kind), tilt, kind)
                          for tilt in series.tilts])
        name = f"{series.name}_{suffix}" + ("" if kind == "image" else f"_{kind}")
        path = write_mrc(context.output_path(f"{name}.mrc"), stack, series.pixel_size_a,
                         stack=True)
        for index, tilt in enumerate(out.tilts):
            setattr(tilt, f"{kind}_path", context.relative(path))
            setattr(tilt, f"{kind}_index", index)
    return out


class EraseParams(BaseModel):
    threshold_sd: float = param(8.0, gt=0, unit="SD", help="outlier threshold in robust SDs of "
                                "the difference to the local median")
    box_px: int = param(3, ge=3, le=15, unit="px", help="local median box (odd)")
    grow_px: int = param(1, ge=0, le=5, unit="px", help="grow outliers into neighbours that "
                         "stand out by half the threshold")
    both_signs: bool = param(False, help="also erase dark outliers (dead pixels)")


class EraseXrays(Protocol):
    """Replace X-ray hits and hot pixels by the median of their neighbourhood (like IMOD's
    ccderaser in automatic mode)."""

    name = "tiltseries.erase_xrays"
    label = "Erase X-rays"
    Params = EraseParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series to clean")}
    outputs = {"tilt_series": Output(TiltSeries, help="tilt series with outliers replaced")}
    citations = ["Mastronarde (1997) J Struct Biol 120:343-352. doi:10.1006/jsbi.1997.3919"]

    def process(self, item: TiltSeries, params: EraseParams,
                context: ProcessContext) -> dict[str, Any]:
        if params.box_px % 2 == 0:
            raise ItemError(f"box_px must be odd, got {params.box_px}")
        erased = []

        def clean(image: np.ndarray, tilt: TiltImage, kind: str) -> np.ndarray:
            cleaned, mask = erase_xrays(image, params.threshold_sd, params.box_px,
                                        params.grow_px, params.both_signs)
            if kind == "image":
                erased.append(int(mask.sum()))
            return cleaned

        out = rewrite_series(item, context, clean, "erased")
        context.log(f"{item.name}: erased {sum(erased)} pixels in {len(erased)} tilts "
                    f"(per tilt: {erased})")
        return {"tilt_series": out}


class DoseFilterParams(BaseModel):
    exposure: Literal["mid", "pre", "post"] = param(
        "mid", choices=["mid", "pre", "post"],
        help="accumulated exposure used per tilt: before it (pre), half-way (mid) or after (post)")


class DoseFilter(Protocol):
    """Attenuate each frequency of each tilt by its accumulated exposure (Grant & Grigorieff
    2015 critical exposure curve), using the tilts' pre-exposure and the dose per tilt."""

    name = "tiltseries.dose_filter"
    label = "Dose filter"
    Params = DoseFilterParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series to filter")}
    outputs = {"tilt_series": Output(TiltSeries, help="exposure-filtered tilt series")}
    citations = ["Grant & Grigorieff (2015) eLife 4:e06980. doi:10.7554/eLife.06980"]

    def process(self, item: TiltSeries, params: DoseFilterParams,
                context: ProcessContext) -> dict[str, Any]:
        dose = item.acquisition.dose_per_tilt_e_a2
        fraction = {"pre": 0.0, "mid": 0.5, "post": 1.0}[params.exposure]
        if dose == 0 and all(t.pre_exposure_e_a2 == 0 for t in item.tilts):
            raise ItemError(f"{item.name}: no dose information (dose_per_tilt_e_a2 and all "
                            f"pre-exposures are 0); cannot dose-filter")

        def weigh(image: np.ndarray, tilt: TiltImage, kind: str) -> np.ndarray:
            exposure = tilt.pre_exposure_e_a2 + fraction * dose
            return dose_filter_image(image, item.pixel_size_a, exposure,
                                     item.acquisition.voltage_kv)

        out = rewrite_series(item, context, weigh, "dosefiltered")
        context.log(f"{item.name}: filtered {len(item.tilts)} tilts, exposures "
                    f"{min(t.pre_exposure_e_a2 for t in item.tilts):.1f}-"
                    f"{max(t.pre_exposure_e_a2 for t in item.tilts) + dose:.1f} e/Å²")
        return {"tilt_series": out}


class ExcludeParams(BaseModel):
    tilts: list[float] = param([], help="tilts to exclude, by angle (°) or index (see 'by')")
    by: Literal["angle", "index"] = param("angle", choices=["angle", "index"],
                                          help="whether 'tilts' lists angles or 0-based indices")
    ctf_flags: bool = param(False, help="also exclude tilts the CTF assistant's rules flag")
    defocus_tolerance: float = param(0.2, gt=0, le=5, help="relative defocus deviation from the "
                                     "series mean allowed when ctf_flags is on")
    max_fit_resolution_a: float = param(0.0, ge=0, unit="Å", help="with ctf_flags: exclude tilts "
                                        "whose CTF fit resolution is worse (0: no limit)")
    mode: Literal["remove", "mark"] = param("remove", choices=["remove", "mark"], help="remove "
                                            "the tilts from the series or mark them excluded")


class ExcludeViews(Protocol):
    """Exclude views of tilt series by a list of angles/indices and/or by the CTF rules; the
    remaining tilts keep their images, alignment and CTF."""

    name = "tiltseries.exclude_views"
    label = "Exclude views"
    Params = ExcludeParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series")}
    outputs = {"tilt_series": Output(TiltSeries, help="tilt series without the excluded views")}

    def process(self, item: TiltSeries, params: ExcludeParams,
                context: ProcessContext) -> dict[str, Any]:
        angles = np.array([t.tilt_deg for t in item.tilts])
        try:
            chosen = set(resolve_tilts(params.tilts, angles, params.by))
        except ValueError as error:
            raise ItemError(f"{item.name}: {error}") from error
        if params.ctf_flags:
            if any(t.ctf is None for t in item.tilts):
                raise ItemError(f"{item.name}: ctf_flags needs a CTF for every tilt "
                                f"(run ctf.estimate first)")
            verdict = assess_ctf([t.ctf.defocus_u_a for t in item.tilts],
                                 [t.ctf.defocus_v_a for t in item.tilts],
                                 [t.ctf.fit_resolution_a for t in item.tilts],
                                 params.defocus_tolerance, params.max_fit_resolution_a or None)
            chosen |= set(np.nonzero(verdict.flagged)[0].tolist())
        out = exclude_tilts(item, sorted(chosen), params.mode)
        if out is None:
            raise ItemError(f"{item.name}: every tilt would be excluded")
        context.log(f"{item.name}: excluded {len(chosen)} views "
                    f"({', '.join(f'{angles[i]:g}°' for i in sorted(chosen)) or 'none'})")
        return {"tilt_series": out}


def exclude_tilts(series: TiltSeries, indices: list[int], mode: str = "remove") -> TiltSeries | None:
    """Copy of ``series`` without (or with excluded flags on) the tilts at ``indices``;
    None when no tilt would remain. Per-tilt image slices, alignment and CTF travel with tilts."""
    drop = set(indices)
    out = series.model_copy(deep=True)
    if mode == "mark":
        for index in drop:
            out.tilts[index].excluded = True
        return out if out.included_tilts() else None
    kept = [tilt for index, tilt in enumerate(out.tilts) if index not in drop]
    if not kept:
        return None
    out.tilts = kept
    return out


def select_tilts(series: TiltSeries, indices: list[int]) -> TiltSeries | None:
    """Copy of ``series`` holding only the tilts at ``indices`` (None if empty)."""
    if not indices:
        return None
    out = series.model_copy(deep=True)
    out.tilts = [out.tilts[i] for i in sorted(set(indices))]
    return out
