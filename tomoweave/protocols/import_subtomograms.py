"""import.subtomograms and export.relion31: RELION 3.1-style subtomograms with 3D CTF weights.

``tomoweave import subtomograms particles.star`` brings subtomograms made elsewhere (RELION 3.1,
Warp, Dynamo via a RELION STAR) into the project as ``Subtomogram`` items, the same data model
as ``particles.extract`` and ``particles.extract_pseudo`` write, so ``average.refine`` takes
either. Files are linked, not copied.

RELION 3.1 reads ``rlnCtfImage`` as the CTF and squares it for the weight, also for
CTF-premultiplied data (relion_reconstruct, relion_refine). A premultiplied subtomogram's
weight Σ CTF² therefore travels as its square root: the import squares it into the run's
outputs, the export writes the root beside the STAR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.engine import (
    Input,
    InputError,
    ItemError,
    Output,
    ProcessContext,
    Protocol,
    Task,
    param,
)
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.formats.relion_subtomograms import (
    export_relion31_folder,
    read_relion31_subtomograms,
)
from tomoweave.formats.star_io import StarFormatError
from tomoweave.model import Particle, Subtomogram, particles_by_tomogram
from tomoweave.protocols.imports import _link, expand_files


class ImportSubtomogramsParams(BaseModel):
    files: list[str] = param(..., help="RELION 3.1-style particles STAR files (rlnImageName, "
                             "rlnCtfImage, optics group with rlnImagePixelSize)")
    tomo_size_xyz: list[int] | None = param(None, cli="--tomo-size", help="tomogram size X Y Z "
                                            "in pixels, to centre rlnCoordinateX/Y/Z")
    coordinate_pixel_size_a: float | None = param(
        None, gt=0, unit="Å", help="pixel size of rlnCoordinateX/Y/Z (default: the "
        "subtomograms')")


class ImportSubtomograms(Protocol):
    """Subtomograms with 3D CTF weights from a RELION 3.1-style STAR, with their particles."""

    name = "import.subtomograms"
    label = "Import subtomograms (RELION 3.1 STAR)"
    description = ("Reads a particles STAR naming 3D subtomograms (rlnImageName) and their 3D "
                   "weights (rlnCtfImage, box³ with the zero frequency at the centre), the "
                   "pixel size from the optics group, rlnCtfDataAreCtfPremultiplied, and "
                   "rlnAngleRot/Tilt/Psi and rlnOrigin*Angst as priors. Missing files, "
                   "weights of another box size or a missing pixel size stop the import with "
                   "one line naming the file and the field.")
    Params = ImportSubtomogramsParams
    outputs = {"subtomograms": Output(Subtomogram, help="the imported subtomograms"),
               "particles": Output(Particle, help="their particles (positions, priors)")}

    def plan(self, params: ImportSubtomogramsParams, inputs: dict[str, Any]) -> list[Task]:
        tasks = []
        for path in expand_files(params.files):
            try:
                subtomograms, warnings = read_relion31_subtomograms(
                    path, tomo_size_xyz=tuple(params.tomo_size_xyz) if params.tomo_size_xyz
                    else None, coordinate_pixel_size_a=params.coordinate_pixel_size_a)
            except (StarFormatError, ValueError) as error:
                raise InputError(str(error)) from None
            by_name = {s.name: s for s in subtomograms}
            groups = particles_by_tomogram([s.particle for s in subtomograms])
            for tomogram, particles in groups.items():
                tasks.append(Task(key=f"{path.stem}:{tomogram}", payload={
                    "star": str(path), "warnings": warnings,
                    "subtomograms": [by_name[p.name].model_dump(mode="json")
                                     for p in particles]}))
        if not tasks:
            raise InputError(f"{self.name}: the STAR files hold no subtomograms")
        return tasks

    def process(self, payload: dict, params: ImportSubtomogramsParams,
                context: ProcessContext) -> dict[str, Any]:
        for warning in payload["warnings"]:
            context.log(warning)
        imported = []
        for record in payload["subtomograms"]:
            item = Subtomogram.model_validate(record)
            folder = f"subtomograms/{item.particle.tomogram}"
            path = _link(context, item.path, f"{folder}/{Path(item.path).name}")
            weight = item.weight_path
            if weight and item.ctf_premultiplied:  # RELION's CTF image; the weight is its square
                weight = context.relative(write_mrc(
                    context.output_path(f"{folder}/weights/{item.name}_ctf2.mrc"),
                    _read(weight, item) ** 2, item.pixel_size_a))
            elif weight:
                weight = _link(context, weight, f"{folder}/weights/{Path(weight).name}")
            imported.append(item.model_copy(update={"path": path, "weight_path": weight}))
        context.log(f"{len(imported)} subtomograms of {imported[0].particle.tomogram} "
                    f"({imported[0].box_size_px} px at {imported[0].pixel_size_a:g} Å, "
                    f"{'CTF-premultiplied' if imported[0].ctf_premultiplied else 'plain'}) from "
                    f"{Path(payload['star']).name}")
        return {"subtomograms": imported, "particles": [s.particle for s in imported]}


def _read(path: str, item: Subtomogram) -> np.ndarray:
    try:
        return read_mrc(path)[0]
    except MrcError as error:
        raise ItemError(f"{item.name}: rlnCtfImage {error}") from None


# ----------------------------------------------------------------------------- export
class ExportRelion31Params(BaseModel):
    out: str = param(..., help="folder to write particles.star (and CTF images) into")
    voltage_kv: float = param(300.0, gt=0, unit="kV", help="acceleration voltage (optics)")
    spherical_aberration_mm: float = param(2.7, ge=0, unit="mm", cli="--cs",
                                           help="spherical aberration (optics)")
    amplitude_contrast: float = param(0.07, ge=0, le=1, help="amplitude contrast (optics)")


class ExportRelion31(Protocol):
    """Subtomograms as a RELION 3.1 particles STAR for relion_refine (subtomogram mode)."""

    name = "export.relion31"
    label = "Export subtomograms (RELION 3.1 STAR)"
    description = ("Writes particles.star naming every subtomogram and its 3D CTF image, with "
                   "an optics group (pixel size, box, rlnCtfDataAreCtfPremultiplied) and the "
                   "particles' orientations, for RELION 3.1's relion_refine / "
                   "relion_reconstruct --3d_rot.")
    Params = ExportRelion31Params
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="subtomograms to export")}
    outputs = {}

    def plan(self, params: ExportRelion31Params, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = inputs.get("subtomograms") or []
        if not subtomograms:
            raise InputError("subtomograms: nothing to export")
        sizes = {(s.box_size_px, round(s.pixel_size_a, 4)) for s in subtomograms}
        if len(sizes) > 1:
            raise InputError(f"subtomograms of several boxes/pixel sizes {sorted(sizes)}: "
                             "export one kind at a time")
        return [Task(key="relion31", payload={})]

    def process(self, payload: dict, params: ExportRelion31Params,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = list(context.inputs["subtomograms"])
        try:
            star = export_relion31_folder(
                params.out, subtomograms, context.resolve, voltage_kv=params.voltage_kv,
                spherical_aberration_mm=params.spherical_aberration_mm,
                amplitude_contrast=params.amplitude_contrast)
        except MrcError as error:
            raise ItemError(f"rlnCtfImage {error}") from None
        context.log(f"{len(subtomograms)} subtomograms -> {star}")
        return {}
