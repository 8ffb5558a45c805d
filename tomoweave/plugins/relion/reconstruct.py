"""relion.reconstruct: RELION 3.1's relion_reconstruct of subtomograms from their poses."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from tomoweave.engine import Input, InputError, ItemError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.mrc import MrcError, mrc_header_info
from tomoweave.formats.relion_subtomograms import export_relion31_folder
from tomoweave.model import Subtomogram, Volume
from tomoweave.plugins.relion.programs import RELION_RECONSTRUCT

CITATION_RELION = ("Scheres SHW (2012) RELION: implementation of a Bayesian approach to cryo-EM "
                   "structure determination. J Struct Biol 180:519-530")
CITATION_RELION_STA = ("Bharat TAM, Scheres SHW (2016) Resolving macromolecular structures from "
                       "electron cryo-tomography data using subtomogram averaging in RELION. "
                       "Nat Protoc 11:2054-2065")


class RelionReconstructParams(BaseModel):
    symmetry: str = param("C1", help="point group (RELION's --sym: C1, C2, D7, O, I1...)")
    ctf: bool = param(True, help="use the subtomograms' 3D CTF images (--ctf)")
    max_resolution_a: float | None = param(None, gt=0, unit="Å",
                                           help="leave out frequencies beyond this (--maxres)")
    timeout_min: float | None = param(None, gt=0, unit="min",
                                      help="stop RELION after this long (default: no limit)")


def check_one_box(subtomograms: list[Subtomogram], what: str) -> None:
    """One box and pixel size (one RELION optics group), else a one-line InputError."""
    if not subtomograms:
        raise InputError(f"{what}: no subtomograms")
    sizes = {(s.box_size_px, round(s.pixel_size_a, 4)) for s in subtomograms}
    if len(sizes) > 1:
        raise InputError(f"{what}: subtomograms of several boxes/pixel sizes {sorted(sizes)}: "
                         "RELION takes one kind per run")


def relion_star(context: ProcessContext, subtomograms: list[Subtomogram]) -> str:
    """``particles.star`` for RELION in the task's work folder; its name relative to it."""
    try:
        export_relion31_folder(context.work_dir, subtomograms, context.resolve)
    except (MrcError, ValueError) as error:
        raise ItemError(str(error)) from None
    return "particles.star"


def keep_output(context: ProcessContext, written: str, filename: str) -> str:
    """Move RELION's file from the work folder into the run's outputs (one rename, so the
    output appears whole); its project-relative path."""
    source = context.work_dir / written
    if not source.is_file():
        raise ItemError(f"RELION finished but wrote no {written}")
    target = context.output_path(filename)
    os.replace(source, target)
    return context.relative(target)


class RelionReconstruct(Protocol):
    """relion_reconstruct --3d_rot of subtomograms at their orientations, with their 3D CTF."""

    name = "relion.reconstruct"
    label = "RELION: reconstruct from poses"
    description = ("Writes the subtomograms as a RELION 3.1 particles STAR (3D CTF images, "
                   "orientations) and runs relion_reconstruct --3d_rot; the map is a Volume.")
    citations = [CITATION_RELION, CITATION_RELION_STA]
    programs = (RELION_RECONSTRUCT,)
    Params = RelionReconstructParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False,
                                    help="subtomograms with their orientations")}
    outputs = {"maps": Output(Volume, help="the reconstruction")}

    def plan(self, params: RelionReconstructParams, inputs: dict[str, Any]) -> list[Task]:
        check_one_box(list(inputs.get("subtomograms") or []), "subtomograms")
        return [Task(key="reconstruct", payload={})]

    def process(self, payload: dict, params: RelionReconstructParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = list(context.inputs["subtomograms"])
        star = relion_star(context, subtomograms)
        args = ["relion_reconstruct", "--i", star, "--o", "reconstruction.mrc", "--3d_rot",
                "--sym", params.symmetry, "--angpix", f"{subtomograms[0].pixel_size_a:g}"]
        if params.ctf:
            args.append("--ctf")
        if params.max_resolution_a:
            args += ["--maxres", f"{params.max_resolution_a:g}"]
        context.run_command(args, cwd=context.work_dir, program=RELION_RECONSTRUCT,
                            timeout_s=params.timeout_min * 60 if params.timeout_min else None)
        path = keep_output(context, "reconstruction.mrc", "relion_reconstruct.mrc")
        info = mrc_header_info(context.resolve(path))
        box = subtomograms[0].box_size_px
        if tuple(info["shape"]) != (box, box, box):
            raise ItemError(f"{path}: RELION wrote a {info['shape']} map for {box}³ boxes")
        return {"maps": Volume(name="relion_reconstruct", path=path,
                               pixel_size_a=subtomograms[0].pixel_size_a, size_xyz=(box,) * 3,
                               symmetry=params.symmetry)}
