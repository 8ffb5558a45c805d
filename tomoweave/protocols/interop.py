"""Import protocols for other programs' files: alignments, CTFs and particles.

``import.FORMAT`` reads files with ``tomoweave.convert`` (so through the geometry layer) and
outputs tilt series and/or particles. Given an existing ``tilt_series`` input, the alignment and
CTF read from the files are put onto those tilt series (matched by name, then tilt by tilt) so
they keep their images; otherwise the tilt series carry only what the files hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from tomoweave.convert import ConvertOptions, Loaded, load
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
from tomoweave.formats.copick import read_ome_zarr
from tomoweave.formats.dynamo import read_em
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import (
    Particle,
    Subtomogram,
    TiltSeries,
    Tomogram,
    Volume,
    as_particle_table,
)
from tomoweave.protocols.imports import _link, expand_files, series_name

MATCH_TOLERANCE_DEG = 1.0


class InteropImportParams(BaseModel):
    files: list[str] = param(..., help="files to import (wildcards allowed)")
    pixel_size_a: float | None = param(None, gt=0, unit="Å", help="pixel size of the files' "
                                       "pixels, when they do not say (default: the input tilt "
                                       "series' pixel size)")
    tomo_size_xyz: list[int] | None = param(None, cli="--tomo-size", help="tomogram size X Y Z "
                                            "in pixels, for coordinates counted from the corner")
    image_size_xy: list[int] | None = param(None, cli="--image-size",
                                            help="tilt-image size X Y in pixels")
    tilts: str | None = param(None, help="tilt angles file (.tlt/.rawtlt) for files without them")
    series: list[str] = param([], help="input tilt series to put the files' alignment/CTF on "
                              "when the names differ: NAME (one file), or FILE=NAME per file "
                              "(FILE: the file's name without its suffix)")


def _options(params: InteropImportParams, pixel_size_a: float | None = None) -> ConvertOptions:
    return ConvertOptions(
        pixel_size_a=params.pixel_size_a or pixel_size_a,
        tomo_size_xyz=tuple(params.tomo_size_xyz) if params.tomo_size_xyz else None,
        image_size_xy=tuple(params.image_size_xy) if params.image_size_xy else None,
        tilts_file=params.tilts)


class InteropImport(Protocol):
    """Base of the import.FORMAT protocols; subclasses name the file suffixes they accept."""

    suffixes: ClassVar[tuple[str, ...]] = ()
    pixel_suffixes: ClassVar[tuple[str, ...]] = ()  # files whose shifts are in pixels
    Params = InteropImportParams
    inputs = {"tilt_series": Input(TiltSeries, mapped=False, optional=True,
                                   help="tilt series to put the imported alignment/CTF on")}
    outputs = {"tilt_series": Output(TiltSeries), "particles": Output(Particle),
               "tomograms": Output(Tomogram), "volumes": Output(Volume),
               "subtomograms": Output(Subtomogram)}

    def plan(self, params: InteropImportParams, inputs: dict[str, Any]) -> list[Task]:
        targets = {s.name: s for s in inputs.get("tilt_series", []) or []}
        paths = expand_files(params.files)
        chosen = _explicit_targets(params.series, paths, targets)
        tasks: list[Task] = []
        for path in paths:
            if self.suffixes and not path.name.lower().endswith(self.suffixes):
                raise InputError(f"{path}: {self.name} reads {' '.join(self.suffixes)} files")
            target = _file_target(path, targets, chosen, single=len(paths) == 1)
            loaded = self._load(path, params, target.pixel_size_a if target else None)
            if target is None and not targets and not params.pixel_size_a and (
                    path.suffix.lower() in self.pixel_suffixes):
                raise InputError(f"{path.name}: its shifts are in pixels: give the pixel size "
                                 f"(--pixel-size Å) or the tilt series it aligns "
                                 f"(--input tilt_series=RUN)")
            for series in loaded.series:
                onto = _series_target(series, path, target, targets, len(loaded.series))
                tasks.append(Task(key=onto or series.name, payload={
                    "tilt_series": _resolve_paths(series, path).model_dump(mode="json"),
                    "onto": onto}))
            tasks += [Task(key=f"tomogram:{t.name}", payload=t) for t in loaded.tomograms]
            tasks += [Task(key=f"volume:{v.name}", payload=v) for v in loaded.volumes]
            subtomograms = {s.name: s for s in loaded.subtomograms}
            for tomogram, group in as_particle_table(loaded.particles).by_tomogram().items():
                tasks.append(Task(key=f"particles:{tomogram}", payload={
                    "particles": group,  # a table: no object per particle
                    "subtomograms": [subtomograms[n].model_dump(mode="json")
                                     for n in group.names.tolist() if n in subtomograms]}))
        if not tasks:
            raise InputError(f"{self.name}: the files hold no tilt series or particles")
        return tasks

    def _load(self, path: Path, params: InteropImportParams, pixel: float | None) -> Loaded:
        try:
            return load(path, _options(params, pixel))
        except (ValueError, OSError) as error:  # format errors name file/line/column already
            raise InputError(str(error)) from None

    def process(self, payload: Any, params: InteropImportParams,
                context: ProcessContext) -> dict[str, Any]:
        empty = {name: [] for name in self.outputs}
        if isinstance(payload, dict) and "particles" in payload:
            particles = as_particle_table(payload["particles"])
            context.log(f"{len(particles)} particles of {particles.tomograms[0]}")
            subtomograms = [_link_subtomogram(Subtomogram.model_validate(s), context)
                            for s in payload.get("subtomograms", [])]
            return {**empty, "particles": particles, "subtomograms": subtomograms}
        if isinstance(payload, Tomogram | Volume):
            output = "tomograms" if isinstance(payload, Tomogram) else "volumes"
            return {**empty, output: payload.model_copy(update={
                "path": _as_project_mrc(payload.path, payload.name, payload.pixel_size_a,
                                        context)})}
        series = TiltSeries.model_validate(payload["tilt_series"])
        targets = {s.name: s for s in context.inputs.get("tilt_series", []) or []}
        if payload["onto"] is not None:
            imported = series.name
            series = merge_onto(targets[payload["onto"]], series)
            context.log(f"{imported}: alignment/CTF put on the project's tilt series "
                        f"{series.name}")
        else:
            series = _link_files(series, context)
        return {**empty, "tilt_series": series}


def _explicit_targets(pairs: list[str], paths: list[Path],
                      targets: dict[str, TiltSeries]) -> dict[str, str]:
    """``--series`` as file key -> target name ("" stands for the only file)."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        key, _, name = pair.rpartition("=")
        if not key and len(paths) != 1:
            raise InputError(f"--series {pair}: with {len(paths)} files say which file goes "
                             f"onto it: FILE=NAME")
        if name not in targets:
            raise InputError(f"--series {pair}: no tilt series {name!r} in the input "
                             f"(it has {', '.join(targets) or 'none: give --input tilt_series=RUN'})")
        chosen[key] = name
    return chosen


def _file_keys(path: Path) -> tuple[str, ...]:
    """Names a file is known by: TS_01.xf, TS_01_CTF.txt and TS_01.mrc.mdoc all give TS_01 (the
    file's own name, a symbolic link's included, not its target's)."""
    return (series_name(path), path.stem, path.stem.removesuffix("_CTF"), path.name)


def _file_target(path: Path, targets: dict[str, TiltSeries], chosen: dict[str, str],
                 single: bool) -> TiltSeries | None:
    """The input tilt series a file's alignment goes onto, as far as the file tells: the one
    named for it, else the one with its name, else the only one there is."""
    if single and "" in chosen:
        return targets[chosen[""]]
    named = next((chosen[k] for k in _file_keys(path) if k in chosen), None)
    if named is not None:
        return targets[named]
    by_name = next((targets[k] for k in _file_keys(path) if k in targets), None)
    if by_name is not None or chosen:
        return by_name
    return next(iter(targets.values())) if single and len(targets) == 1 else None


def _series_target(series: TiltSeries, path: Path, target: TiltSeries | None,
                   targets: dict[str, TiltSeries], count: int) -> str | None:
    """Name of the input tilt series ``series`` (read from ``path``) goes onto; None when there
    is no tilt_series input. A file that cannot be matched is refused: attaching nothing and
    finishing with a new, image-less series would only hide it."""
    if not targets:
        return None
    if series.name in targets:
        return series.name
    if target is not None and count == 1:
        return target.name
    raise InputError(f"{path.name}: holds tilt series {series.name!r}, which is none of the "
                     f"input tilt series ({', '.join(targets)}): say which with "
                     f"--series NAME (or FILE=NAME for several files)")


def _resolve_paths(series: TiltSeries, source: Path) -> TiltSeries:
    """File paths of the imported tilts made absolute (searched as written, relative to the
    source file and to up to four folders above it, as RELION projects nest them); paths not
    found become None, since item paths are read relative to the project."""
    copy = series.model_copy(deep=True)
    base = source.resolve().parent
    cache: dict[str, str | None] = {}

    def find(written: str | None) -> str | None:
        if not written:
            return None
        if written not in cache:
            candidate = Path(written)
            options = [candidate] if candidate.is_absolute() else [
                *(folder / candidate for folder in [base, *base.parents][:5]),
                base / candidate.name]
            found = next((c for c in options if c.is_file()), None)
            cache[written] = str(found) if found else None
        return cache[written]

    for tilt in copy.tilts:
        tilt.image_path, tilt.movie_path = find(tilt.image_path), find(tilt.movie_path)
        if tilt.ctf is not None:
            tilt.ctf = tilt.ctf.model_copy(update={"diagnostic_path": None})
    return copy


def _link_files(series: TiltSeries, context: ProcessContext) -> TiltSeries:
    """Symbolic links in the run's outputs to the imported files; project-relative paths."""
    copy = series.model_copy(deep=True)
    links: dict[str, str | None] = {}
    for tilt in copy.tilts:
        for field in ("image_path", "movie_path"):
            source = getattr(tilt, field)
            if source and source not in links:
                links[source] = _link(context, source, f"{series.name}/{Path(source).name}")
            setattr(tilt, field, links.get(source) if source else None)
    missing = sum(t.image_path is None for t in copy.tilts)
    if missing:
        context.log(f"{series.name}: {missing} of {len(copy.tilts)} tilt images not found; "
                    f"give --input tilt_series=RUN to put this alignment on imported stacks")
    return copy


def _link_subtomogram(subtomogram: Subtomogram, context: ProcessContext) -> Subtomogram:
    folder = f"subtomograms/{subtomogram.particle.tomogram}"
    path = _link(context, subtomogram.path, f"{folder}/{Path(subtomogram.path).name}")
    weight = (_link(context, subtomogram.weight_path,
                    f"{folder}/weights/{Path(subtomogram.weight_path).name}")
              if subtomogram.weight_path else None)
    return subtomogram.model_copy(update={"path": path, "weight_path": weight})


def _as_project_mrc(source: str, name: str, pixel_size_a: float, context: ProcessContext) -> str:
    """An MRC in the run's outputs: a link to an MRC source, a conversion of OME-Zarr or .em."""
    path = Path(source)
    if path.suffix.lower() in (".mrc", ".mrcs", ".rec", ".st", ".map"):
        return _link(context, str(path), f"{name}{path.suffix}")
    volume = read_ome_zarr(path)[0] if path.suffix.lower() == ".zarr" else read_em(path)
    out = context.output_path(f"{name}.mrc")
    write_mrc(out, volume, pixel_size_a)
    context.log(f"{path.name} -> {out.name} ({volume.shape[::-1]} voxels, {pixel_size_a} Å)")
    return context.relative(out)


def merge_onto(target: TiltSeries, imported: TiltSeries) -> TiltSeries:
    """``target`` with the alignment and CTF of ``imported``: tilt by tilt when the counts agree,
    else each imported tilt onto the target tilt with the nearest nominal angle."""
    merged = target.model_copy(deep=True)
    if len(imported.tilts) == len(merged.tilts):
        pairs = list(zip(merged.tilts, imported.tilts, strict=True))
    else:
        pairs = []
        for tilt in imported.tilts:
            nearest = min(merged.tilts, key=lambda t: abs(t.tilt_deg - tilt.tilt_deg))
            if abs(nearest.tilt_deg - tilt.tilt_deg) > MATCH_TOLERANCE_DEG:
                raise ItemError(f"{target.name}: imported tilt {tilt.tilt_deg:.2f}° has no tilt "
                                f"within {MATCH_TOLERANCE_DEG}° in the project's series")
            pairs.append((nearest, tilt))
        matched = {id(t) for t, _ in pairs}
        for tilt in merged.tilts:  # tilts the program left out (excluded views)
            if id(tilt) not in matched:
                tilt.excluded = True
    for mine, theirs in pairs:
        if theirs.alignment is not None:
            mine.alignment = theirs.alignment
        if theirs.ctf is not None:
            mine.ctf = theirs.ctf
        mine.excluded = mine.excluded or theirs.excluded
    return merged



class ImportRelion5(InteropImport):
    """RELION 5 tomograms.star (+ tilt-series STAR files), particles STAR or optimisation set."""

    name = "import.relion5"
    label = "Import RELION 5 tomography"
    suffixes = (".star",)


class ImportRelion4(InteropImport):
    """RELION 3/4 subtomogram particles (pixel coordinates from the tomogram corner)."""

    name = "import.relion4"
    label = "Import RELION 3/4 particles"
    suffixes = (".star",)


class ImportImod(InteropImport):
    """IMOD alignment (.xf with .tlt/.xtilt/.defocus beside it), or particles in a .mod model."""

    name = "import.imod"
    label = "Import IMOD alignment or model"
    suffixes = (".xf", ".tlt", ".mod", ".defocus")
    pixel_suffixes = (".xf",)


class ImportAreTomo(InteropImport):
    """AreTomo .aln alignment (with <name>_CTF.txt beside it when present)."""

    name = "import.aretomo"
    label = "Import AreTomo alignment"
    suffixes = (".aln",)
    pixel_suffixes = (".aln",)


class ImportWarp(InteropImport):
    """Warp/WarpTools tilt-series XML or .tomostar, or a Warp particle STAR."""

    name = "import.warp"
    label = "Import Warp tilt series"
    suffixes = (".xml", ".tomostar", ".star")


class ImportDynamo(InteropImport):
    """Dynamo particle table (.tbl, with its .doc tomogram map beside it) or .em volumes."""

    name = "import.dynamo"
    label = "Import Dynamo table or volume"
    suffixes = (".tbl", ".em")


class ImportCtffind(InteropImport):
    """Per-tilt CTF: CTFFIND4/5 or AreTomo _CTF.txt, or IMOD ctfplotter .defocus."""

    name = "import.ctffind"
    label = "Import CTF estimates"
    suffixes = (".txt", ".defocus")


class ImportEman(InteropImport):
    """EMAN2 info json with boxes_3d."""

    name = "import.eman"
    label = "Import EMAN2 boxes"
    suffixes = (".json",)


class ImportCopick(InteropImport):
    """copick picks json (locations and 4×4 transforms) or OME-Zarr tomograms (.zarr)."""

    name = "import.copick"
    label = "Import copick picks or tomograms"
    suffixes = (".json", ".zarr")
