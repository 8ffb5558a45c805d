"""import.tiltseries: a tilt stack with its tilt angles (.tlt/.rawtlt) and acquisition settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tomoweave.engine import InputError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.imod import ImodFormatError, read_tilt_angles
from tomoweave.formats.mrc import MrcError, mrc_header_info
from tomoweave.model import Acquisition, TiltImage, TiltSeries
from tomoweave.model.acquisition_order import (
    bidirectional_order,
    dose_symmetric_order,
    order_ranks,
    pre_exposures_e_a2,
)
from tomoweave.protocols.imports import MicroscopeParams, _link, expand_files, series_name


class TiltSeriesParams(MicroscopeParams):
    files: list[str] = param(..., help="MRC tilt stacks (.mrc/.st), wildcards allowed")
    tilts: str | None = param(None, help="file of tilt angles in stack order (.tlt/.rawtlt); "
                              "default: the stack's name with .rawtlt or .tlt")
    pixel_size_a: float | None = param(None, gt=0, unit="Å",
                                       help="pixel size (default: from the MRC header)")
    tilt_axis_deg: float = param(0.0, unit="°", help="tilt-axis angle as SerialEM reports it")
    acquisition_scheme: Literal["dose_symmetric", "bidirectional", "stack_order"] = param(
        "dose_symmetric", help="order the tilts were exposed in, for the dose each received")


class ImportTiltSeries(Protocol):
    """Tilt stacks plus tilt-angle files, with the acquisition settings given as parameters."""

    name = "import.tiltseries"
    label = "Import tilt stacks"
    Params = TiltSeriesParams
    outputs = {"tilt_series": Output(TiltSeries)}

    def plan(self, params: TiltSeriesParams, inputs: dict[str, Any]) -> list[Task]:
        stacks = expand_files(params.files)
        if params.tilts and len(stacks) > 1:
            raise InputError("--tilts names one file but several stacks were given; "
                             "put a .tlt beside each stack instead")
        return [Task(key=series_name(stack), payload=_check_stack(stack, params))
                for stack in stacks]

    def process(self, payload: dict, params: TiltSeriesParams, context: ProcessContext) -> dict:
        angles = payload["tilts_deg"]
        order = {"dose_symmetric": dose_symmetric_order, "bidirectional": bidirectional_order,
                 "stack_order": lambda a: list(range(len(a)))}[params.acquisition_scheme](angles)
        dose = params.dose_per_tilt_e_a2 or 0.0
        pre = pre_exposures_e_a2(order, [dose] * len(angles))
        ranks = order_ranks(order)
        name = series_name(Path(payload["stack"]))
        link = _link(context, payload["stack"], f"{name}.mrc")
        tilts = [TiltImage(tilt_deg=angle, acquisition_order=ranks[i],
                           pre_exposure_e_a2=float(pre[i]), image_path=link, image_index=i)
                 for i, angle in enumerate(angles)]
        acquisition = Acquisition(
            pixel_size_a=payload["pixel_size_a"], voltage_kv=params.voltage_kv,
            spherical_aberration_mm=params.spherical_aberration_mm,
            amplitude_contrast=params.amplitude_contrast, dose_per_tilt_e_a2=dose,
            tilt_axis_deg=params.tilt_axis_deg)
        return {"tilt_series": TiltSeries(name=name, acquisition=acquisition,
                                          image_size_xy=tuple(payload["image_size_xy"]),
                                          tilts=tilts)}


def _check_stack(stack: Path, params: TiltSeriesParams) -> dict[str, Any]:
    try:
        info = mrc_header_info(stack)
    except MrcError as error:
        raise InputError(str(error)) from None
    tilts_file = Path(params.tilts) if params.tilts else _default_tilts_file(stack)
    try:
        angles = read_tilt_angles(tilts_file)
    except ImodFormatError as error:
        raise InputError(f"{tilts_file}: {error}") from None
    slices = info["shape"][0] if len(info["shape"]) == 3 else 1
    if slices != len(angles):
        raise InputError(f"{stack}: has {slices} images but {tilts_file.name} lists "
                         f"{len(angles)} tilt angles")
    pixel_size_a = params.pixel_size_a or info["pixel_size_a"]
    if not pixel_size_a or pixel_size_a <= 0:
        raise InputError(f"{stack}: the MRC header has no pixel size; give --pixel-size in Å")
    return {"stack": str(stack), "tilts_deg": [float(a) for a in angles],
            "pixel_size_a": float(pixel_size_a),
            "image_size_xy": [info["shape"][-1], info["shape"][-2]]}


def _default_tilts_file(stack: Path) -> Path:
    for suffix in (".rawtlt", ".tlt"):
        candidate = stack.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise InputError(f"{stack}: no tilt angles given (--tilts FILE) and no "
                     f"{stack.with_suffix('.rawtlt').name} or .tlt beside it")
