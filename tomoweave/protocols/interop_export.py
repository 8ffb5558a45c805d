"""Export protocols: tilt series, particles and tomograms to other programs' files.

``export.FORMAT`` writes into ``out_dir`` (any folder) and logs every file it wrote. Particle
coordinates counted from a tomogram corner use the size and pixel size of the matching item of the
``tomograms`` input, else the ``tomo_size_xyz``/``pixel_size_a`` parameters.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from tomoweave.convert import WRITERS, ConvertOptions, Loaded
from tomoweave.engine import Input, InputError, ItemError, ProcessContext, Protocol, Task, param
from tomoweave.formats import FormatWarning, copick, dynamo, eman, relion5, warp
from tomoweave.formats.imod_extra import write_imod_particles
from tomoweave.formats.mrc import read_mrc
from tomoweave.model import (
    Acquisition,
    Particle,
    TiltSeries,
    Tomogram,
    as_particle_table,
    particles_by_tomogram,
)


class InteropExportParams(BaseModel):
    out_dir: str = param(..., cli="--out", help="folder to write the files into")
    pixel_size_a: float | None = param(None, gt=0, unit="Å", help="pixel size of written particle "
                                       "coordinates (default: the tomogram's, else the tilt "
                                       "series')")
    tomo_size_xyz: list[int] | None = param(None, cli="--tomo-size", help="tomogram size X Y Z "
                                            "in those pixels (default: from the tomograms input)")


class ExportRelion5Params(InteropExportParams):
    defocus_a: float | None = param(None, gt=0, unit="Å", help="nominal defocus (underfocus) "
                                    "for tilts with neither a CTF estimate nor a nominal defocus "
                                    "(RELION 5 needs a defocus for every tilt)")


class InteropExport(Protocol):
    """Base of the export.FORMAT protocols."""

    target: ClassVar[str] = ""
    writes_series: ClassVar[bool] = True  # False: tilt series only give particles a pixel size
    Params = InteropExportParams
    inputs = {
        "tilt_series": Input(TiltSeries, mapped=False, optional=True, help="tilt series"),
        "particles": Input(Particle, mapped=False, optional=True, help="particles"),
        "tomograms": Input(Tomogram, mapped=False, optional=True,
                           help="tomograms: sizes for particle coordinates; volumes for copick"),
    }
    outputs = {}

    def plan(self, params: InteropExportParams, inputs: dict[str, Any]) -> list[Task]:
        if not any(inputs.get(name) for name in self.inputs):
            raise InputError(f"{self.name}: give at least one input: --input tilt_series=RUN, "
                             f"particles=RUN or tomograms=RUN")
        return [Task(key=self.target, payload={"out_dir": str(Path(params.out_dir).resolve())})]

    def process(self, payload: dict, params: InteropExportParams,
                context: ProcessContext) -> dict[str, Any]:
        out = Path(payload["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        series = [_absolute_paths(s, context) for s in context.inputs.get("tilt_series") or []]
        particles = as_particle_table(context.inputs.get("particles") or [])
        tomograms = list(context.inputs.get("tomograms") or [])
        tomograms = [_absolute_tomogram(t, context) for t in tomograms]
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", FormatWarning)
            try:
                written = self.write(out, series, particles, tomograms, params, context)
            except ValueError as error:
                raise ItemError(str(error)) from None
        for note in notes:
            context.warn(note.message)
        for path in written:
            context.log(f"wrote {path}")
        return {}

    def write(self, out: Path, series: list[TiltSeries], particles: list[Particle],
              tomograms: list[Tomogram], params: InteropExportParams,
              context: ProcessContext) -> list[Path]:
        written = []
        if series and self.writes_series:
            written += WRITERS[self.target](Loaded(series=series), out, ConvertOptions())
        for tomogram, group in particles_by_tomogram(particles).items():
            pixel, size = _frame(tomogram, tomograms, series, params)
            written += self.write_particles(out, tomogram, group, pixel, size)
        return written

    def write_particles(self, out: Path, tomogram: str, particles: list[Particle],
                        pixel_size_a: float, size: tuple[int, int, int]) -> list[Path]:
        raise ValueError(f"{self.name} does not write particles")


def _absolute_paths(series: TiltSeries, context: ProcessContext) -> TiltSeries:
    """Image paths made absolute so that files written outside the project still find them."""
    copy = series.model_copy(deep=True)
    for tilt in copy.tilts:
        for name in ("image_path", "movie_path", "even_path", "odd_path"):
            value = getattr(tilt, name)
            if value:
                setattr(tilt, name, str(context.resolve(value)))
        if tilt.ctf is not None and tilt.ctf.diagnostic_path:
            tilt.ctf = tilt.ctf.model_copy(update={
                "diagnostic_path": str(context.resolve(tilt.ctf.diagnostic_path))})
    return copy


def _absolute_tomogram(tomogram: Tomogram, context: ProcessContext) -> Tomogram:
    paths = {name: str(context.resolve(value)) for name in ("path", "even_path", "odd_path")
             if (value := getattr(tomogram, name))}
    return tomogram.model_copy(update=paths)


def _frame(name: str, tomograms: list[Tomogram], series: list[TiltSeries],
           params: InteropExportParams) -> tuple[float, tuple[int, int, int]]:
    """Pixel size and size of the tomogram particles of ``name`` refer to."""
    match = next((t for t in tomograms if name in (t.name, t.tilt_series)), None)
    if match is not None and params.tomo_size_xyz is None:
        return match.pixel_size_a, tuple(match.size_xyz)
    if params.tomo_size_xyz is None:
        raise ValueError(f"no tomogram size for particles of {name!r}: give the tomograms input "
                         f"or --tomo-size X Y Z")
    pixel = params.pixel_size_a or next((s.pixel_size_a for s in series if s.name == name), None)
    if pixel is None:
        raise ValueError(f"no pixel size for particles of {name!r}: give --pixel-size")
    return pixel, tuple(params.tomo_size_xyz)


class ExportRelion5(InteropExport):
    """RELION 5: tomograms.star, tilt_series/*.star, particles.star (centred Å), optimisation set."""

    name = "export.relion5"
    label = "Export to RELION 5"
    target = "relion5"

    Params = ExportRelion5Params

    def plan(self, params: ExportRelion5Params, inputs: dict[str, Any]) -> list[Task]:
        for series in inputs.get("tilt_series") or []:
            reason = relion5.defocus_missing(relion5.with_nominal_defocus(series, params.defocus_a))
            if reason:
                raise InputError(reason)
        return super().plan(params, inputs)

    def write(self, out, series, particles, tomograms, params, context) -> list[Path]:
        series = [relion5.with_nominal_defocus(s, params.defocus_a) for s in series]
        size = tuple(params.tomo_size_xyz) if params.tomo_size_xyz else None
        acquisition = (Acquisition(pixel_size_a=params.pixel_size_a) if params.pixel_size_a
                       else None)
        return relion5.write_relion5_export(out, series, particles, tomograms,
                                            tomo_size_xyz=size, acquisition=acquisition)


class ExportImod(InteropExport):
    """IMOD: <name>.xf/.tlt/.xtilt/.rawtlt/.defocus per tilt series, <tomogram>.mod particles."""

    name = "export.imod"
    label = "Export to IMOD"
    target = "imod"

    def write_particles(self, out, tomogram, particles, pixel_size_a, size) -> list[Path]:
        path = out / f"{tomogram}.mod"
        write_imod_particles(path, particles, pixel_size_a, size)
        return [path]


class ExportWarp(InteropExport):
    """WarpTools: <name>.xml and .tomostar per tilt series, particles_<tomogram>.star."""

    name = "export.warp"
    label = "Export to Warp"
    target = "warp"

    def write_particles(self, out, tomogram, particles, pixel_size_a, size) -> list[Path]:
        path = out / f"particles_{tomogram}.star"
        warp.write_warp_particles(path, particles, pixel_size_a, size, pixel_size_a)
        return [path]


class ExportDynamo(InteropExport):
    """Dynamo: <tomogram>.tbl (+ .doc) per tomogram."""

    name = "export.dynamo"
    label = "Export to Dynamo"
    target = "dynamo"

    writes_series = False

    def write(self, out, series, particles, tomograms, params, context) -> list[Path]:
        if not particles:
            raise ValueError("export.dynamo writes particle tables: give --input particles=RUN")
        return super().write(out, series, particles, tomograms, params, context)

    def write_particles(self, out, tomogram, particles, pixel_size_a, size) -> list[Path]:
        path = out / f"{tomogram}.tbl"
        dynamo.write_dynamo_table(path, particles, pixel_size_a, size)
        return [path, path.with_suffix(".doc")]


class ExportAreTomo(InteropExport):
    """AreTomo: <name>.aln and <name>_CTF.txt per tilt series."""

    name = "export.aretomo"
    label = "Export to AreTomo"
    target = "aretomo"


class ExportEman(InteropExport):
    """EMAN2: info/<tomogram>_info.json boxes and spt/particle_parms_<tomogram>.json."""

    name = "export.eman"
    label = "Export to EMAN2"
    target = "eman"

    writes_series = False

    def write_particles(self, out, tomogram, particles, pixel_size_a, size) -> list[Path]:
        info = out / "info" / f"{tomogram}_info.json"
        eman.write_eman_boxes(info, particles, pixel_size_a, size)
        parms = out / "spt" / f"particle_parms_{tomogram}.json"
        eman.write_eman_orientations(parms, particles, f"particles3d/{tomogram}.hdf")
        return [info, parms]


class ExportCopick(InteropExport):
    """copick project: config, picks per run, tomograms as OME-Zarr."""

    name = "export.copick"
    label = "Export to copick"
    target = "copick"
    writes_series = False

    def write(self, out, series, particles, tomograms, params, context) -> list[Path]:
        copick.write_copick_config(out, ["particle"])
        written = [out / "copick_config.json"]
        for tomogram in tomograms:
            run = tomogram.tilt_series or tomogram.name
            store = (out / "ExperimentRuns" / run / f"VoxelSpacing{tomogram.pixel_size_a:.3f}"
                     / f"{tomogram.method or 'tomoweave'}.zarr")
            volume, _ = read_mrc(context.resolve(tomogram.path))
            copick.write_ome_zarr(store, volume, tomogram.pixel_size_a)
            written.append(store)
        return written + super().write(out, series, particles, tomograms, params, context)

    def write_particles(self, out, tomogram, particles, pixel_size_a, size) -> list[Path]:
        path = copick.copick_picks_path(out, tomogram, "particle")
        copick.write_copick_picks(path, particles, pixel_size_a, size)
        return [path]
