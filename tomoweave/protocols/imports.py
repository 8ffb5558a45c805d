"""import.mdoc and import.tiltseries: bring tilt series (or their movies) into a project.

Imported files are not copied: a symbolic link in the run's outputs points at each source file,
so the catalog keeps project-relative paths and a copied project still finds its data.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tomoweave.engine import InputError, ItemError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.mdoc import MdocError, MdocTiltSeries, read_mdoc
from tomoweave.formats.mrc import MrcError, mrc_header_info
from tomoweave.model import Acquisition, TiltImage, TiltSeries
from tomoweave.model.acquisition_order import order_ranks, pre_exposures_e_a2


class MicroscopeParams(BaseModel):
    voltage_kv: float = param(300.0, gt=0, unit="kV", help="acceleration voltage")
    spherical_aberration_mm: float = param(2.7, ge=0, unit="mm", cli="--cs",
                                           help="spherical aberration Cs")
    amplitude_contrast: float = param(0.07, ge=0, le=1, help="fraction of amplitude contrast")
    dose_per_tilt_e_a2: float | None = param(
        None, ge=0, unit="e/Å²", help="dose of each tilt (default: the mdoc's ExposureDose)")


class MdocParams(MicroscopeParams):
    files: list[str] = param(..., help="SerialEM .mdoc files (wildcards allowed)")
    frames_dir: str | None = param(None, help="folder of the tilt movies; set it to import "
                                   "movies (found by the file name of each SubFramePath)")
    pixel_size_a: float | None = param(None, gt=0, unit="Å", help="override the mdoc PixelSpacing")
    tilt_axis_deg: float | None = param(None, unit="°", help="override the mdoc tilt-axis angle")
    exclude_tilts_deg: list[float] = param([], unit="°", help="nominal tilts to mark excluded")
    missing_frames: Literal["error", "exclude"] = param(
        "error", help="a tilt whose movie is missing: stop with an error, or exclude the tilt")
    watch: bool = param(False, help="keep watching for new .mdoc files while the microscope "
                        "collects; later runs process each tilt series as it arrives")
    settle_s: float = param(30.0, ge=0, unit="s", help="in watch mode, an .mdoc unchanged for "
                            "this long is taken as complete")
    stop_after_idle_s: float = param(1800.0, gt=0, unit="s", help="in watch mode, stop when no "
                                     "new tilt series has arrived for this long")


class ImportMdoc(Protocol):
    """Tilt series or tilt-series movies described by SerialEM .mdoc files."""

    name = "import.mdoc"
    label = "Import SerialEM tilt series"
    Params = MdocParams
    outputs = {"tilt_series": Output(TiltSeries)}

    def plan(self, params: MdocParams, inputs: dict[str, Any]) -> list[Task]:
        if params.watch:
            return [Task(key=series_name(p), payload={"mdoc": str(p), "check": True})
                    for p in settled_files(params.files, params.settle_s)]
        return [self._checked_task(path, params) for path in expand_files(params.files)]

    def still_producing(self, params: MdocParams, idle_seconds: float) -> bool:
        return params.watch and idle_seconds < params.stop_after_idle_s

    def _checked_task(self, path: Path, params: MdocParams) -> Task:
        try:
            mdoc = read_mdoc(path)
        except MdocError as error:
            raise InputError(f"{path}: {error}") from None
        sources = _locate_sources(path, mdoc, params)
        return Task(key=series_name(path), payload={"mdoc": str(path), **sources})

    def process(self, payload: dict, params: MdocParams, context: ProcessContext) -> dict:
        if payload.get("check"):  # watch mode: a bad file fails its own item, not the session
            try:
                payload = self._checked_task(Path(payload["mdoc"]), params).payload
            except InputError as error:
                raise ItemError(str(error)) from None
        mdoc = read_mdoc(payload["mdoc"])
        name = series_name(Path(payload["mdoc"]))
        acquisition = _acquisition(mdoc, params)
        order = mdoc.acquisition_order()
        doses = [s.exposure_dose_e_a2 or acquisition.dose_per_tilt_e_a2 for s in mdoc.sections]
        pre = pre_exposures_e_a2(order, doses)
        ranks = order_ranks(order)
        stack_link = _link(context, payload.get("stack"), f"{name}.mrc")
        tilts = []
        for index, section in enumerate(mdoc.sections):
            movie = payload.get("movies", {}).get(str(index))
            tilts.append(TiltImage(
                tilt_deg=section.tilt_deg, acquisition_order=ranks[index],
                pre_exposure_e_a2=float(pre[index]),
                image_path=stack_link, image_index=index if stack_link else 0,
                movie_path=_link(context, movie, f"frames/{Path(movie).name}") if movie else None,
                frame_count=section.num_sub_frames if movie else None,
                nominal_defocus_a=abs(section.target_defocus_um) * 1e4
                if section.target_defocus_um else None,
                excluded=_is_excluded(section.tilt_deg, params.exclude_tilts_deg)
                or (payload.get("movies") is not None and movie is None)))
        size = mdoc.image_size_xy or tuple(payload.get("image_size_xy") or (0, 0))
        context.log(f"{name}: {len(tilts)} tilts, {acquisition.pixel_size_a} Å/px, "
                    f"tilt axis {acquisition.tilt_axis_deg}°")
        return {"tilt_series": TiltSeries(name=name, acquisition=acquisition, image_size_xy=size,
                                          tilts=tilts, mdoc_path=context.relative(payload["mdoc"]))}


def _acquisition(mdoc: MdocTiltSeries, params: MdocParams) -> Acquisition:
    doses = [s.exposure_dose_e_a2 for s in mdoc.sections if s.exposure_dose_e_a2]
    dose = params.dose_per_tilt_e_a2 if params.dose_per_tilt_e_a2 is not None else (
        sum(doses) / len(doses) if doses else 0.0)
    return Acquisition(
        pixel_size_a=params.pixel_size_a or mdoc.pixel_size_a,
        voltage_kv=mdoc.voltage_kv or params.voltage_kv,
        spherical_aberration_mm=params.spherical_aberration_mm,
        amplitude_contrast=params.amplitude_contrast,
        dose_per_tilt_e_a2=dose,
        tilt_axis_deg=params.tilt_axis_deg if params.tilt_axis_deg is not None
        else (mdoc.tilt_axis_deg or 0.0))


def _locate_sources(path: Path, mdoc: MdocTiltSeries, params: MdocParams) -> dict[str, Any]:
    """Check the stack (or the movies) the mdoc describes exist and agree with it."""
    if (params.pixel_size_a or mdoc.pixel_size_a) is None:
        raise InputError(f"{path}: PixelSpacing missing; give --pixel-size in Å")
    if params.frames_dir:
        return {"movies": _find_movies(path, mdoc, params)}
    candidates = [folder / Path(mdoc.image_file or "").name for folder in
                  dict.fromkeys((path.parent, path.resolve().parent))]
    candidates += [path.with_suffix(""), path.resolve().with_suffix("")]
    stack = next((c for c in candidates if c.name and c.is_file() and c.suffix != ".mdoc"), None)
    if stack is None:
        raise InputError(f"{path}: image stack {mdoc.image_file or path.with_suffix('').name} not "
                         f"found beside the mdoc (for movies give --frames-dir)")
    try:
        info = mrc_header_info(stack)
    except MrcError as error:
        raise InputError(str(error)) from None
    slices = info["shape"][0] if len(info["shape"]) == 3 else 1
    if slices != len(mdoc.sections):
        raise InputError(f"{stack}: has {slices} images but {path.name} describes "
                         f"{len(mdoc.sections)} tilts")
    return {"stack": str(stack.resolve()), "image_size_xy": [info["shape"][-1], info["shape"][-2]]}


def _find_movies(path: Path, mdoc: MdocTiltSeries, params: MdocParams) -> dict[str, str]:
    frames_dir = Path(params.frames_dir)
    if not frames_dir.is_dir():
        raise InputError(f"{frames_dir}: frames folder not found")
    movies, missing = {}, []
    for index, section in enumerate(mdoc.sections):
        name = section.sub_frame_name
        candidate = frames_dir / name if name else None
        if candidate is not None and candidate.is_file():
            movies[str(index)] = str(candidate.resolve())
        else:
            missing.append(f"[ZValue = {section.z_value}] {name or 'SubFramePath missing'}")
    if missing and (params.missing_frames == "error" or not movies):
        raise InputError(f"{path}: {len(missing)} of {len(mdoc.sections)} movies not found in "
                         f"{frames_dir}, first: {missing[0]}")
    return movies


def _is_excluded(tilt_deg: float, excluded: list[float], tolerance_deg: float = 0.5) -> bool:
    return any(abs(tilt_deg - e) <= tolerance_deg for e in excluded)


def _link(context: ProcessContext, source: str | None, name: str) -> str | None:
    """A symbolic link in the run's outputs to an imported file; its project-relative path."""
    if not source:
        return None
    link = context.output_path(name)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.abspath(source), link)
    return context.relative(link)


def series_name(path: Path) -> str:
    """TS_01.mdoc and TS_01.mrc.mdoc both give TS_01."""
    name = Path(path).name
    for suffix in (".mdoc", ".mrc", ".st", ".mrcs", ".ali"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def settled_files(patterns: list[str], settle_s: float) -> list[Path]:
    """Files matching the patterns that have not changed for ``settle_s`` seconds."""
    now = time.time()
    found = {Path(m).resolve() for p in patterns for m in glob.glob(os.path.expanduser(p))}
    return sorted(p for p in found if p.is_file() and now - p.stat().st_mtime >= settle_s)


def expand_files(patterns: list[str]) -> list[Path]:
    """Absolute paths from file names and wildcards; a pattern that matches nothing is an error.

    Symbolic links are kept, not resolved: a link's own name is the name users gave the data
    (TS_01.xf -> /scratch/run3/align.xf is TS_01's alignment)."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise InputError(f"{pattern}: no such file")
        paths.extend(Path(os.path.abspath(m)) for m in matches)
    return paths
