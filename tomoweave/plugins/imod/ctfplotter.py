"""imod.ctfplotter: IMOD's ctfplotter in batch mode, its .defocus read as each tilt's CTF."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.engine.programs import Program
from tomoweave.formats.ctffind import defocus_entries_per_view, read_imod_defocus
from tomoweave.formats.imod import write_tilt_angles
from tomoweave.formats.star_io import StarFormatError
from tomoweave.model import TiltSeries
from tomoweave.plugins.stacks import series_stack

CTFPLOTTER = Program(
    name="ctfplotter", family="IMOD", version_args=(), url="https://bio3d.colorado.edu/imod/",
    install_hint="install IMOD from https://bio3d.colorado.edu/imod/download.html and put "
                 "$IMOD_DIR/bin on the PATH", description="CTF estimation of tilt series")
CITATION_CTFPLOTTER = ("Xiong Q, Morphew MK, Schwartz CL, Hoenger AH, Mastronarde DN (2009) "
                       "CTF determination and correction for low dose tomographic tilt "
                       "series. J Struct Biol 168:378-387")


class CtfplotterParams(BaseModel):
    expected_defocus_a: float = param(30000.0, gt=0, unit="Å", help="expected defocus "
                                      "(underfocus), around which ctfplotter searches")
    defocus_tolerance_a: float = param(2000.0, gt=0, unit="Å", help="range of views included "
                                       "around the tilt axis is set by this defocus spread")
    timeout_min: float | None = param(None, gt=0, unit="min",
                                      help="stop ctfplotter after this long per series")


def ctfplotter_command(stack: str, angles: str, defocus: str, series: TiltSeries,
                       params: CtfplotterParams) -> list[str]:
    """ctfplotter's batch command (lengths in nm, as its man page asks)."""
    acquisition = series.acquisition
    return ["ctfplotter", "-InputStack", stack, "-AngleFile", angles, "-DefocusFile", defocus,
            "-AxisAngle", f"{acquisition.tilt_axis_deg:g}",
            "-PixelSize", f"{series.pixel_size_a / 10.0:g}",
            "-Voltage", f"{acquisition.voltage_kv:g}",
            "-SphericalAberration", f"{acquisition.spherical_aberration_mm:g}",
            "-AmplitudeContrast", f"{acquisition.amplitude_contrast:g}",
            "-ExpectedDefocus", f"{params.expected_defocus_a / 10.0:g}",
            "-DefocusTol", f"{params.defocus_tolerance_a / 10.0:g}",
            "-AutoFitRangeAndStep", "0,0", "-SaveAndExit"]


class Ctfplotter(Protocol):
    """IMOD ctfplotter: per-view defocus of each tilt series (batch mode)."""

    name = "imod.ctfplotter"
    label = "IMOD: ctfplotter CTF estimation"
    description = ("Runs IMOD's ctfplotter on each tilt series in batch mode (every view fitted "
                   "on its own: -AutoFitRangeAndStep 0,0 -SaveAndExit) and reads the .defocus "
                   "file it writes into each tilt's CTF.")
    citations = [CITATION_CTFPLOTTER]
    programs = (CTFPLOTTER,)
    Params = CtfplotterParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series with images")}
    outputs = {"tilt_series": Output(TiltSeries, help="tilt series with a CTF per tilt")}

    def process(self, item: TiltSeries, params: CtfplotterParams,
                context: ProcessContext) -> dict[str, Any]:
        stack = series_stack(item, context)
        angles = context.work_dir / f"{item.name}.tlt"
        write_tilt_angles(angles, [t.tilt_deg for t in item.tilts])
        defocus = context.work_dir / f"{item.name}.defocus"
        context.run_command(
            ctfplotter_command(str(stack), str(angles), str(defocus), item, params),
            cwd=context.work_dir, program=CTFPLOTTER,
            timeout_s=params.timeout_min * 60 if params.timeout_min else None)
        try:
            ctfs = defocus_entries_per_view(read_imod_defocus(defocus), len(item.tilts))
        except (StarFormatError, ValueError) as error:
            raise ItemError(f"{item.name}: ctfplotter's result {error}") from None
        out = item.model_copy(deep=True)
        for tilt, ctf in zip(out.tilts, ctfs, strict=True):
            tilt.ctf = ctf
        context.log(f"{item.name}: ctfplotter defocus {min(c.defocus_u_a for c in ctfs):.0f}-"
                    f"{max(c.defocus_u_a for c in ctfs):.0f} Å over {len(ctfs)} views")
        return {"tilt_series": out}
