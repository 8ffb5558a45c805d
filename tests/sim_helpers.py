"""Test helpers over simulated data: the simulator's true alignment and CTF as a protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.engine import Input, Output, ProcessContext, Protocol, param
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.model import TiltSeries
from tomoweave.sim import load_truth


class AttachParams(BaseModel):
    even_odd: bool = param(False, help="write even/odd halves (Poisson, half dose each)")


class AttachTruth(Protocol):
    """Test helper: the simulator's true alignment and CTF on every tilt (+ even/odd halves)."""

    name = "test.attach_truth"
    Params = AttachParams
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tilt_series": Output(TiltSeries)}

    def process(self, item: TiltSeries, params: AttachParams,
                context: ProcessContext) -> dict[str, Any]:
        folder = context.resolve(item.tilts[0].image_path).parent
        truth = load_truth(folder / "truth" / f"{item.name}.json")
        series = item.model_copy(deep=True)
        for tilt, true_tilt in zip(series.tilts, truth.tilts, strict=True):
            tilt.alignment = true_tilt.alignment()
            tilt.ctf = true_tilt.ctf()
        if params.even_odd:
            noise_free, _ = read_mrc(folder / truth.noise_free_file)
            rng = np.random.default_rng(1)
            for kind in ("even", "odd"):
                half = rng.poisson(noise_free / 2).astype(np.float32)
                path = write_mrc(context.output_path(f"{item.name}_{kind}.mrc"), half,
                                 truth.pixel_size_a, stack=True)
                for tilt in series.tilts:
                    setattr(tilt, f"{kind}_path", context.relative(path))
                    setattr(tilt, f"{kind}_index", tilt.image_index)
        return {"tilt_series": series}


register_protocol(AttachTruth)
