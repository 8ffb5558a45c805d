"""import.volume and import.tomogram: maps (templates, references) and tomograms made elsewhere.

The files are not copied: a symbolic link in the run's outputs points at each source file. The
pixel size comes from the parameters, or from the MRC header when the parameter is not given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tomoweave.engine import InputError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.mrc import MrcError, mrc_header_info
from tomoweave.geometry.symmetry import parse_symmetry
from tomoweave.model import Tomogram, Volume
from tomoweave.protocols.imports import _link, expand_files, series_name


class ImportVolumeParams(BaseModel):
    files: list[str] = param(..., help="MRC maps (wildcards allowed)")
    pixel_size_a: float | None = param(None, gt=0, unit="Å",
                                       help="pixel size (default: the MRC header's)")
    symmetry: str = param("C1", help="point-group symmetry of the map: C<n>, D<n>, T, O or I")


class ImportTomogramParams(BaseModel):
    files: list[str] = param(..., help="MRC tomograms (wildcards allowed)")
    pixel_size_a: float | None = param(None, gt=0, unit="Å",
                                       help="voxel size (default: the MRC header's)")
    tilt_series: str | None = param(None, help="name of the tilt series the tomograms belong "
                                    "to (default: none; the file name is the tomogram's name)")


def _checked_file(path: Path, pixel_size_a: float | None, cubic: bool) -> dict[str, Any]:
    """Header facts of an MRC volume, or InputError naming the file and what is wrong."""
    try:
        info = mrc_header_info(path)
    except MrcError as error:
        raise InputError(str(error)) from None
    shape = info["shape"]
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"{path}: expected a 3D volume, got shape {shape}")
    if cubic and len(set(shape)) != 1:
        raise InputError(f"{path}: a template or reference map must be cubic, got {shape[::-1]} "
                         "(x, y, z)")
    pixel = pixel_size_a or info["pixel_size_a"]
    if not pixel or pixel <= 0:
        raise InputError(f"{path}: the header has no pixel size; give --set pixel_size_a=Å")
    return {"file": str(path), "pixel_size_a": float(pixel),
            "size_xyz": [int(shape[2]), int(shape[1]), int(shape[0])]}


class ImportVolume(Protocol):
    """Maps (template, reference, mask) as Volume items, with their pixel size and symmetry."""

    name = "import.volume"
    label = "Import volume (template / reference)"
    description = "Brings MRC maps into the project, e.g. a template for pick.template."
    Params = ImportVolumeParams
    outputs = {"volume": Output(Volume, help="the imported maps")}

    def plan(self, params: ImportVolumeParams, inputs: dict[str, Any]) -> list[Task]:
        try:
            parse_symmetry(params.symmetry)
        except ValueError as error:
            raise InputError(f"symmetry: {error}") from None
        return [Task(key=series_name(p), payload=_checked_file(p, params.pixel_size_a, True))
                for p in expand_files(params.files)]

    def process(self, payload: dict, params: ImportVolumeParams,
                context: ProcessContext) -> dict[str, Any]:
        name = series_name(Path(payload["file"]))
        link = _link(context, payload["file"], f"{name}.mrc")
        context.log(f"{payload['size_xyz'][0]}³ at {payload['pixel_size_a']:.3f} Å/px, "
                    f"symmetry {params.symmetry}")
        return {"volume": Volume(name=name, path=link, pixel_size_a=payload["pixel_size_a"],
                                 size_xyz=tuple(payload["size_xyz"]),
                                 symmetry=params.symmetry.strip().upper())}


class ImportTomogram(Protocol):
    """Tomograms reconstructed elsewhere, as Tomogram items."""

    name = "import.tomogram"
    label = "Import tomograms"
    description = "Brings MRC tomograms made by other programs into the project."
    Params = ImportTomogramParams
    outputs = {"tomograms": Output(Tomogram, help="the imported tomograms")}

    def plan(self, params: ImportTomogramParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key=series_name(p), payload=_checked_file(p, params.pixel_size_a, False))
                for p in expand_files(params.files)]

    def process(self, payload: dict, params: ImportTomogramParams,
                context: ProcessContext) -> dict[str, Any]:
        name = series_name(Path(payload["file"]))
        link = _link(context, payload["file"], f"{name}.mrc")
        nx, ny, nz = payload["size_xyz"]
        context.log(f"{nx}x{ny}x{nz} at {payload['pixel_size_a']:.3f} Å/voxel")
        return {"tomograms": Tomogram(name=name, path=link, pixel_size_a=payload["pixel_size_a"],
                                      size_xyz=(nx, ny, nz), tilt_series=params.tilt_series,
                                      method="imported")}
