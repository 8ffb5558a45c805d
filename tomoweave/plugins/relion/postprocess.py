"""relion.postprocess: relion_postprocess of an average's half maps, read into an Average."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.averaging.fsc import automatic_mask
from tomoweave.engine import Input, InputError, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.formats.relion_results import read_postprocess_star
from tomoweave.formats.star_io import StarFormatError
from tomoweave.model import Average, FscShell, Volume
from tomoweave.plugins.relion.programs import RELION_POSTPROCESS
from tomoweave.plugins.relion.reconstruct import CITATION_RELION, keep_output

CITATION_BFACTOR = ("Rosenthal PB, Henderson R (2003) Optimal determination of particle "
                    "orientation, absolute hand, and contrast loss in single-particle electron "
                    "cryomicroscopy. J Mol Biol 333:721-745")
CITATION_MASK = ("Chen S, McMullan G, Faruqi AR, et al. (2013) High-resolution noise "
                 "substitution to measure overfitting and validate resolution in 3D structure "
                 "determination by single particle electron cryomicroscopy. Ultramicroscopy "
                 "135:24-35")


class RelionPostprocessParams(BaseModel):
    mask_diameter_a: float | None = param(
        None, gt=0, unit="Å", help="without a mask input: diameter of the particle for "
        "tomoweave's automatic mask (default: 80 % of the box)")
    bfactor_a2: float | None = param(
        0.0, unit="Å²", help="B-factor to sharpen with (--adhoc_bfac, negative sharpens); None: "
        "RELION's automatic fit (--auto_bfac, needs a resolution better than 10 Å)")
    timeout_min: float | None = param(None, gt=0, unit="min",
                                      help="stop RELION after this long (default: no limit)")


class RelionPostprocess(Protocol):
    """relion_postprocess: masked, phase-randomisation-corrected FSC and sharpening."""

    name = "relion.postprocess"
    label = "RELION: post-process an average"
    description = ("Runs relion_postprocess on an average's half maps with a mask (the mask "
                   "input, else tomoweave's automatic mask of the average); RELION's sharpened "
                   "map, mask-corrected FSC curves and resolution become an Average.")
    citations = [CITATION_RELION, CITATION_BFACTOR, CITATION_MASK]
    programs = (RELION_POSTPROCESS,)
    Params = RelionPostprocessParams
    inputs = {"average": Input(Average, help="averages with half maps"),
              "mask": Input(Volume, mapped=False, optional=True,
                            help="solvent mask (1 protein, 0 solvent), same box")}
    outputs = {"average": Output(Average, help="the post-processed average")}

    def process(self, item: Average, params: RelionPostprocessParams,
                context: ProcessContext) -> dict[str, Any]:
        if not (item.half1_path and item.half2_path):
            raise InputError(f"{item.name}: no half maps: relion_postprocess needs both")
        half1 = context.resolve(item.half1_path)
        half2 = context.resolve(item.half2_path)
        mask = self._mask(item, params, context, half1, half2)
        (context.work_dir / "post").mkdir(exist_ok=True)  # RELION writes logfile.pdf beside
        args = ["relion_postprocess", "--i", str(half1), "--i2", str(half2), "--o",
                "post/postprocess", "--angpix", f"{item.pixel_size_a:g}", "--mask", mask]
        args += (["--auto_bfac"] if params.bfactor_a2 is None
                 else ["--adhoc_bfac", f"{params.bfactor_a2:g}"])
        context.run_command(args, cwd=context.work_dir, program=RELION_POSTPROCESS,
                            timeout_s=params.timeout_min * 60 if params.timeout_min else None)
        try:
            result = read_postprocess_star(context.work_dir / "post" / "postprocess.star")
        except StarFormatError as error:
            raise ItemError(f"RELION's result {error}") from None
        context.log(f"relion_postprocess: {result.resolution_a:.1f} Å, B-factor "
                    f"{result.bfactor_a2 if result.bfactor_a2 is not None else 'none'}")
        out = Average(
            name=item.name, path=keep_output(context, "post/postprocess.mrc",
                                             f"{item.name}_postprocess.mrc"),
            pixel_size_a=item.pixel_size_a, size_xyz=item.size_xyz,
            half1_path=item.half1_path, half2_path=item.half2_path,
            mask_path=keep_output(context, "mask.mrc", f"{item.name}_mask.mrc"),
            fsc=[FscShell(**record) for record in result.fsc], resolution_a=result.resolution_a,
            particle_count=item.particle_count, symmetry=item.symmetry)
        return {"average": out}

    @staticmethod
    def _mask(item: Average, params: RelionPostprocessParams, context: ProcessContext,
              half1, half2) -> str:
        """The mask as ``mask.mrc`` in the work folder: the mask input, or an automatic one."""
        try:
            masks = context.inputs.get("mask") or []
            if masks:
                mask, _ = read_mrc(context.resolve(masks[0].path))
                if mask.shape != tuple(reversed(item.size_xyz)):
                    raise ItemError(f"mask {masks[0].name}: {mask.shape[::-1]} for an average "
                                    f"of {item.size_xyz}")
            else:
                average = 0.5 * (read_mrc(half1)[0] + read_mrc(half2)[0])
                diameter = params.mask_diameter_a or 0.8 * item.size_xyz[0] * item.pixel_size_a
                mask = automatic_mask(average, item.pixel_size_a, diameter,
                                      resolution_a=item.resolution_a)
        except MrcError as error:
            raise ItemError(str(error)) from None
        write_mrc(context.work_dir / "mask.mrc", np.clip(mask, 0.0, 1.0), item.pixel_size_a)
        return "mask.mrc"
