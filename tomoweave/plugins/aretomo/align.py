"""aretomo.align: AreTomo2's alignment of each tilt series (-VolZ 0: no reconstruction)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.convert import ConversionError, ConvertOptions, load
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.engine.programs import Program
from tomoweave.formats.imod import write_tilt_angles
from tomoweave.model import TiltSeries
from tomoweave.plugins.stacks import series_stack

ARETOMO2 = Program(
    name="AreTomo2", family="AreTomo", aliases=("AreTomo",), version_args=("--version",),
    needs=("gpu",), url="https://github.com/czimaginginstitute/AreTomo2",
    install_hint="download an AreTomo2 build for your CUDA version from "
                 "https://github.com/czimaginginstitute/AreTomo2 (needs an NVIDIA GPU)",
    description="marker-free tilt-series alignment")
CITATION_ARETOMO = ("Zheng S, Wolff G, Greenan G, et al. (2022) AreTomo: An integrated software "
                    "package for automated marker-free, motion-corrected cryo-electron "
                    "tomographic alignment and reconstruction. J Struct Biol X 6:100068")


class AreTomoAlignParams(BaseModel):
    binning: int = param(4, ge=1, help="binning of the alignment (-OutBin)")
    alignment_thickness_px: int = param(0, ge=0, unit="px", help="sample thickness used in "
                                        "the alignment (-AlignZ, unbinned px; 0: AreTomo's "
                                        "default)")
    patches: list[int] = param([], help="local alignment patches X Y (-Patch; empty: global "
                               "only)")
    refine_tilt_axis: bool = param(True, help="refine the tilt axis from the series' nominal "
                                   "one (-TiltAxis ANGLE 1; else ANGLE -1)")
    dark_tolerance: float = param(0.7, gt=0, le=1, help="tilts darker than this fraction of "
                                  "the series are dropped (-DarkTol)")
    gpus: list[int] = param([0], help="GPU ids (-Gpu)")
    timeout_min: float | None = param(None, gt=0, unit="min",
                                      help="stop AreTomo2 after this long per series")


def aretomo_command(stack: str, output: str, angles: str, tilt_axis_deg: float,
                    params: AreTomoAlignParams) -> list[str]:
    """AreTomo2's command line for aligning ``stack`` (angles file, nominal tilt axis)."""
    args = ["AreTomo2", "-InMrc", stack, "-OutMrc", output, "-AngFile", angles, "-VolZ", "0",
            "-OutBin", str(params.binning), "-TiltAxis", f"{tilt_axis_deg:g}",
            "1" if params.refine_tilt_axis else "-1", "-DarkTol", f"{params.dark_tolerance:g}",
            "-Gpu", *[str(g) for g in params.gpus]]
    if params.alignment_thickness_px:
        args += ["-AlignZ", str(params.alignment_thickness_px)]
    if params.patches:
        args += ["-Patch", *[str(p) for p in params.patches]]
    return args


class AreTomoAlign(Protocol):
    """AreTomo2 marker-free alignment; its .aln becomes each tilt's TiltAlignment."""

    name = "aretomo.align"
    label = "AreTomo2: align tilt series"
    description = ("Runs AreTomo2 on each tilt series (stack and tilt angles in acquisition "
                   "order of the stack, -VolZ 0) and reads its .aln: per-tilt rotation, "
                   "shifts and tilt angles in tomoweave's projection model; tilts AreTomo "
                   "dropped as dark are excluded.")
    citations = [CITATION_ARETOMO]
    programs = (ARETOMO2,)
    Params = AreTomoAlignParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series with images")}
    outputs = {"tilt_series": Output(TiltSeries, help="aligned tilt series")}

    def process(self, item: TiltSeries, params: AreTomoAlignParams,
                context: ProcessContext) -> dict[str, Any]:
        stack = series_stack(item, context)
        angles = context.work_dir / f"{item.name}.tlt"
        write_tilt_angles(angles, [t.tilt_deg for t in item.tilts])
        output = context.work_dir / f"{item.name}_aretomo.mrc"
        context.run_command(
            aretomo_command(str(stack), str(output), str(angles),
                            item.acquisition.tilt_axis_deg, params),
            cwd=context.work_dir, program=ARETOMO2,
            timeout_s=params.timeout_min * 60 if params.timeout_min else None)
        aln = output.with_suffix(".aln")
        try:
            (aligned,) = load(aln, ConvertOptions(pixel_size_a=item.pixel_size_a,
                                                  tilts_file=str(angles), name=item.name)).series
        except (ConversionError, ValueError) as error:
            raise ItemError(f"{item.name}: AreTomo2's result {error}") from None
        if len(aligned.tilts) != len(item.tilts):
            raise ItemError(f"{aln.name}: {len(aligned.tilts)} tilts for the {len(item.tilts)} "
                            f"of {item.name}")
        out = item.model_copy(deep=True)
        for tilt, result in zip(out.tilts, aligned.tilts, strict=True):
            tilt.alignment = result.alignment
            tilt.excluded = tilt.excluded or result.excluded
        kept = [t for t in out.tilts if t.alignment is not None]
        context.log(f"{item.name}: AreTomo2 aligned {len(kept)} of {len(out.tilts)} tilts, tilt "
                    f"axis {np.median([t.alignment.z_rot_deg for t in kept]):.2f}°")
        return {"tilt_series": out}
