"""tiltseries.bin: Fourier-bin every tilt of a series (and its even/odd halves)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.binning import fourier_bin_image
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import mmap_mrc, write_mrc
from tomoweave.geometry.coordinates import bin_pixel_size_a
from tomoweave.model import TiltSeries


class BinParams(BaseModel):
    binning: float = param(2.0, ge=1, le=32, help="Fourier binning factor (output pixel size = "
                                                  "input pixel size × binning)")


class BinTiltSeries(Protocol):
    """Downsample tilt series by cropping their spectra; alignment and CTF are kept (in Å)."""

    name = "tiltseries.bin"
    label = "Bin tilt series"
    Params = BinParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series to bin")}
    outputs = {"tilt_series": Output(TiltSeries, help="binned tilt series")}

    def process(self, item: TiltSeries, params: BinParams, context: ProcessContext) -> dict[str, Any]:
        binned = item.model_copy(deep=True)
        for kind in ("image", "even", "odd"):
            if all(getattr(t, f"{kind}_path") for t in item.tilts):
                stack = bin_tilts(item, kind, params.binning, context)
                path = context.output_path(f"{item.name}{'' if kind == 'image' else '_' + kind}.mrc")
                write_mrc(path, stack, bin_pixel_size_a(item.pixel_size_a, params.binning))
                for index, tilt in enumerate(binned.tilts):
                    setattr(tilt, f"{kind}_path", context.relative(path))
                    setattr(tilt, f"{kind}_index", index)
        if not item.tilts[0].image_path:
            raise ItemError(f"{item.name}: tilts have no images to bin (movies only? run motion.correct)")
        binned.acquisition = item.acquisition.model_copy(
            update={"pixel_size_a": bin_pixel_size_a(item.pixel_size_a, params.binning)})
        binned.image_size_xy = tuple(
            max(1, int(round(n / params.binning))) for n in item.image_size_xy)
        context.log(f"binned {len(item.tilts)} tilts by {params.binning}")
        return {"tilt_series": binned}


def bin_tilts(series: TiltSeries, kind: str, binning: float, context: ProcessContext) -> np.ndarray:
    """Binned images of one kind (image/even/odd) of every tilt, shape (n_tilts, ny, nx)."""
    images = []
    for tilt in series.tilts:
        path = context.resolve(getattr(tilt, f"{kind}_path"))
        index = getattr(tilt, f"{kind}_index")
        with mmap_mrc(path) as mrc:
            data = mrc.data if mrc.data.ndim == 3 else mrc.data[np.newaxis]
            if index >= data.shape[0]:
                raise ItemError(f"{path}: has {data.shape[0]} slices, tilt needs slice {index}")
            images.append(fourier_bin_image(np.asarray(data[index]), binning))
    return np.stack(images)
