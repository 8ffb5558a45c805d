"""Convert between other programs' files without a project: read into model objects, write out.

Every conversion goes through the model (``TiltSeries`` with per-tilt ``TiltAlignment``/``CtfTilt``,
``Particle``) and so through ``tomoweave.geometry``: reading turns a program's convention into
ours, writing turns ours into the target's. ``ConvertOptions`` carries what a source file does
not hold (pixel size, tomogram and image sizes, tilt angles).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomoweave.formats import (
    CONVERSION_TARGETS,
    FormatWarning,
    aretomo,
    copick,
    ctffind,
    dynamo,
    eman,
    imod,
    relion5,
    warp,
)
from tomoweave.formats import relion_particles as rp
from tomoweave.formats.imod_extra import read_imod_particles, write_imod_particles
from tomoweave.formats.mdoc import read_mdoc
from tomoweave.formats.star_io import read_star_blocks
from tomoweave.geometry.projection import tilt_axis_to_z_rot_deg
from tomoweave.model import (
    Acquisition,
    Particle,
    Subtomogram,
    TiltAlignment,
    TiltImage,
    TiltSeries,
    Tomogram,
    Volume,
    particles_by_tomogram,
)

TARGETS = CONVERSION_TARGETS


class ConversionError(ValueError):
    """A conversion that cannot be done with what was given; says what is missing."""


@dataclass
class ConvertOptions:
    pixel_size_a: float | None = None
    tomo_size_xyz: tuple[int, int, int] | None = None
    image_size_xy: tuple[int, int] | None = None
    tilts_file: str | None = None
    name: str | None = None
    defocus_a: float | None = None  # nominal defocus for tilts without one (RELION 5 export)


@dataclass
class Loaded:
    """What a source file held, as model objects."""

    series: list[TiltSeries] = field(default_factory=list)
    particles: list[Particle] = field(default_factory=list)
    tomograms: list[Tomogram] = field(default_factory=list)  # paths: absolute, MRC or OME-Zarr
    volumes: list[Volume] = field(default_factory=list)  # paths: absolute, MRC or .em
    subtomograms: list[Subtomogram] = field(default_factory=list)  # paths: absolute
    source_format: str = ""


def detect_format(path: str | Path) -> str:
    """The source format of a file from its name and, for STAR/json, its content."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr" and path.is_dir():
        return "ome-zarr"
    simple = {".em": "em-volume", ".aln": "aretomo", ".xf": "imod", ".tlt": "imod", ".rawtlt": "imod",
              ".xml": "warp", ".tomostar": "warp-tomostar", ".tbl": "dynamo", ".mdoc": "mdoc",
              ".defocus": "imod-defocus", ".mod": "imod-model", ".txt": "ctffind"}
    if suffix in simple:
        return simple[suffix]
    if suffix == ".star":
        return _star_kind(path)
    if suffix == ".json":
        text = path.read_text(encoding="utf-8", errors="replace")
        if '"boxes_3d"' in text:
            return "eman"
        if "xform.align3d" in text:
            return "eman-orientations"
        if '"points"' in text:
            return "copick"
    raise ConversionError(f"{path.name}: unknown format (expected .aln .xf .tlt .star .xml "
                          f".tomostar .tbl .mdoc .json .defocus .txt)")


def _star_kind(path: Path) -> str:
    blocks = read_star_blocks(path)
    columns = set()
    for block in blocks.values():
        columns |= set(block.columns) if hasattr(block, "columns") else set(block)
    if "rlnTomoTiltSeriesStarFile" in columns:
        return "relion5"
    if "rlnTomoParticlesFile" in columns or "rlnTomoTomogramsFile" in columns:
        return "relion5-optimisation-set"
    if "rlnCenteredCoordinateXAngst" in columns:
        return "relion5-particles"
    if "rlnCoordinateX" in columns:
        return ("warp-particles" if "rlnMicrographName" in columns and "rlnTomoName" not in columns
                else "relion4-particles")
    if "wrpMovieName" in columns:
        return "warp-tomostar"
    if "rlnTomoYTilt" in columns or "rlnTomoNominalStageTiltAngle" in columns:
        return "relion5-tilt-series"
    raise ConversionError(f"{path.name}: a STAR file with none of the columns tomoweave converts "
                          f"(tomograms, tilt series, particles, .tomostar)")


def load(path: str | Path, options: ConvertOptions | None = None) -> Loaded:
    """Read any supported file into model objects."""
    options = options or ConvertOptions()
    path = Path(path)
    kind = detect_format(path)
    readers = {
        "aretomo": _load_aln, "imod": _load_imod, "warp": _load_warp_xml,
        "warp-tomostar": _load_tomostar, "relion5": _load_relion5,
        "relion5-tilt-series": _load_relion5_tilt_series,
        "relion5-optimisation-set": _load_optimisation_set, "mdoc": _load_mdoc,
        "ctffind": _load_ctffind, "imod-defocus": _load_defocus,
        "ome-zarr": _load_ome_zarr, "em-volume": _load_em,
        "relion5-particles": lambda p, o: _with_subtomograms(p, rp.read_relion5_particles(p)),
        "relion4-particles": lambda p, o: _with_subtomograms(p, rp.read_relion4_particles(
            p, o.pixel_size_a, _need(o.tomo_size_xyz, "--tomo-size X Y Z", p))),
        "warp-particles": lambda p, o: Loaded(particles=warp.read_warp_particles(
            p, _pixel(o, p), _need(o.tomo_size_xyz, "--tomo-size X Y Z", p), _pixel(o, p))),
        "dynamo": lambda p, o: Loaded(particles=dynamo.read_dynamo_table(
            p, o.pixel_size_a, _need(o.tomo_size_xyz, "--tomo-size X Y Z", p),
            p.with_suffix(".doc"))),
        "eman": lambda p, o: Loaded(particles=eman.read_eman_boxes(
            p, _pixel(o, p), _need(o.tomo_size_xyz, "--tomo-size X Y Z", p))),
        "copick": lambda p, o: Loaded(particles=copick.read_copick_picks(
            p, _pixel(o, p), _need(o.tomo_size_xyz, "--tomo-size X Y Z", p))),
        "imod-model": lambda p, o: Loaded(particles=read_imod_particles(
            p, _pixel(o, p), _need(o.tomo_size_xyz, "--tomo-size X Y Z", p), o.name or p.stem)),
    }
    if kind not in readers:
        raise ConversionError(f"{path.name}: {kind} files cannot be converted on their own")
    loaded = readers[kind](path, options)
    loaded.source_format = kind
    return loaded


def _with_subtomograms(path: Path, particles: list[Particle]) -> Loaded:
    return Loaded(particles=particles,
                  subtomograms=rp.read_relion_subtomograms(path, particles))


def _need(value, flag: str, path: Path):
    if value is None:
        raise ConversionError(f"{path.name}: this conversion needs {flag}")
    return value


def _pixel(options: ConvertOptions, path: Path) -> float:
    return float(_need(options.pixel_size_a, "--pixel-size (Å)", path))


def _bare_series(name: str, angles, options: ConvertOptions, image_size=None) -> TiltSeries:
    """A tilt series skeleton for alignment-only sources (no stack, no microscope settings)."""
    size = options.image_size_xy or image_size or (0, 0)
    tilts = [TiltImage(tilt_deg=float(a), acquisition_order=i, image_index=i)
             for i, a in enumerate(angles)]
    acquisition = Acquisition(pixel_size_a=options.pixel_size_a or 1.0)
    return TiltSeries(name=name, acquisition=acquisition, image_size_xy=tuple(size), tilts=tilts)


def _load_aln(path: Path, options: ConvertOptions) -> Loaded:
    aln = aretomo.read_aln(path)
    if options.tilts_file:
        aretomo.check_tilt_count(aln, len(imod.read_tilt_angles(options.tilts_file)),
                                 Path(options.tilts_file).name)
    dark = {index: tilt for index, _, tilt in aln.dark_frames}
    with_dark = bool(dark) and aln.raw_size_xyz[2] == len(aln.global_rows) + len(dark)
    # with its dark frames the series has the raw stack's sections: they stay, excluded
    count = aln.raw_size_xyz[2] if with_dark else len(aln.global_rows)
    rows = iter(range(len(aln.global_rows)))
    row_of = {i: None if (with_dark and i in dark) else next(rows) for i in range(count)}
    angles = [aln.tilt_angles_deg[r] if r is not None else dark[i] for i, r in row_of.items()]
    series = _bare_series(options.name or path.stem, angles, options, aln.raw_size_xyz[:2])
    alignments = aretomo.aln_to_alignments(aln, series.pixel_size_a)
    for index, tilt in enumerate(series.tilts):
        if row_of[index] is None:
            tilt.excluded = True
        else:
            tilt.alignment = alignments[row_of[index]]
    ctf_file = path.with_name(f"{path.stem}_CTF.txt")
    if ctf_file.is_file():
        ctfs = ctffind.read_ctffind_txt(ctf_file)
        if len(ctfs) == len(aln.global_rows) and with_dark:  # AreTomo fits the kept tilts only
            ctfs = iter(ctfs)
            for index, tilt in enumerate(series.tilts):
                tilt.ctf = next(ctfs) if row_of[index] is not None else None
        else:
            _attach_ctfs(series, ctfs, ctf_file)
    return Loaded(series=[series])


def _alignments_or_nominal(series: TiltSeries) -> list:
    """Every tilt's alignment; tilts left out of the alignment (excluded) get the nominal one,
    since IMOD and AreTomo need a line per section."""
    nominal_z = nominal_z_rot_deg(series)
    return [t.alignment or TiltAlignment(y_tilt_deg=t.tilt_deg, z_rot_deg=nominal_z)
            for t in series.tilts]


def _beside(path: Path, suffix: str) -> Path | None:
    """The file of ``suffix`` beside ``path``, else beside the file a symbolic link points to."""
    return next((c for c in (path.with_suffix(suffix), path.resolve().with_suffix(suffix))
                 if c.is_file()), None)


def _tilts_beside(path: Path, options: ConvertOptions) -> Path:
    if options.tilts_file:
        return Path(options.tilts_file)
    found = _beside(path, ".tlt") or _beside(path, ".rawtlt")
    if found is None:
        raise ConversionError(f"{path.name}: no tilt angles: give --tilts FILE or put "
                              f"{path.with_suffix('.tlt').name} beside it")
    return found


def _load_imod(path: Path, options: ConvertOptions) -> Loaded:
    xf_path = path if path.suffix == ".xf" else _beside(path, ".xf")
    angles = imod.read_tilt_angles(_tilts_beside(path, options) if path.suffix == ".xf" else path)
    series = _bare_series(options.name or path.stem, angles, options)
    if xf_path is not None:
        transforms = imod.read_xf(xf_path)
        if len(transforms) != len(angles):
            raise ConversionError(f"{xf_path.name}: {len(transforms)} transforms but "
                                  f"{len(angles)} tilt angles")
        xtilt = _beside(path, ".xtilt")
        x_tilts = imod.read_tilt_angles(xtilt) if xtilt else None
        for tilt, alignment in zip(series.tilts, imod.xf_to_alignments(
                transforms, angles, series.pixel_size_a, x_tilts), strict=True):
            tilt.alignment = alignment
    defocus = _beside(path, ".defocus")
    if defocus is not None:
        entries = ctffind.read_imod_defocus(defocus)
        _attach_ctfs(series, ctffind.defocus_entries_per_view(entries, len(angles)), defocus)
    return Loaded(series=[series])


def _attach_ctfs(series: TiltSeries, ctfs, source: Path) -> None:
    if len(ctfs) != len(series.tilts):
        raise ConversionError(f"{source.name}: {len(ctfs)} CTF entries for "
                              f"{len(series.tilts)} tilts")
    for tilt, ctf in zip(series.tilts, ctfs, strict=True):
        tilt.ctf = ctf


def _load_warp_xml(path: Path, options: ConvertOptions) -> Loaded:
    return Loaded(series=[warp.read_warp_xml(path, options.pixel_size_a, options.image_size_xy,
                                             options.tomo_size_xyz)])


def _load_tomostar(path: Path, options: ConvertOptions) -> Loaded:
    return Loaded(series=[warp.read_tomostar(path, _pixel(options, path), options.image_size_xy,
                                             options.tomo_size_xyz)])


def _load_relion5(path: Path, options: ConvertOptions) -> Loaded:
    series = relion5.read_relion5(path, options.image_size_xy)
    tomograms = []
    for entry in relion5.read_tomograms_star(path):
        tomogram = entry.tomogram()
        found = relion5.locate_file(path, tomogram.path) if tomogram else None
        if found is not None:
            tomograms.append(tomogram.model_copy(update={"path": str(found)}))
    if not series and not tomograms:
        raise ConversionError(f"{path.name}: none of its tilt-series STAR files or tomograms "
                              f"was found")
    return Loaded(series=series, tomograms=tomograms)


def _load_ome_zarr(path: Path, options: ConvertOptions) -> Loaded:
    volume, spacing = copick.read_ome_zarr(path)
    run = path.parent.parent.name if path.parent.name.startswith("VoxelSpacing") else path.stem
    size = (volume.shape[2], volume.shape[1], volume.shape[0])
    return Loaded(tomograms=[Tomogram(name=options.name or run, path=str(path),
                                      pixel_size_a=options.pixel_size_a or spacing,
                                      size_xyz=size, tilt_series=run, method=path.stem)])


def _load_em(path: Path, options: ConvertOptions) -> Loaded:
    volume = dynamo.read_em(path)
    size = (volume.shape[2], volume.shape[1], volume.shape[0])
    return Loaded(volumes=[Volume(name=options.name or path.stem, path=str(path),
                                  pixel_size_a=_pixel(options, path), size_xyz=size)])


def _load_relion5_tilt_series(path: Path, options: ConvertOptions) -> Loaded:
    entry = relion5.Relion5Tomogram(
        name=options.name or path.stem, tilt_series_star=str(path),
        acquisition=Acquisition(pixel_size_a=_pixel(options, path)))
    size = options.image_size_xy or (0, 0)
    return Loaded(series=[relion5.read_tilt_series_star(path, entry, size)])


def _load_optimisation_set(path: Path, options: ConvertOptions) -> Loaded:
    files = relion5.read_optimisation_set(path)
    loaded = _load_relion5(files["tomograms"], options) if "tomograms" in files else Loaded()
    if "particles" in files:
        with_subtomograms = _with_subtomograms(
            files["particles"], rp.read_relion5_particles(files["particles"]))
        loaded.particles, loaded.subtomograms = (with_subtomograms.particles,
                                                 with_subtomograms.subtomograms)
    return loaded


def _load_mdoc(path: Path, options: ConvertOptions) -> Loaded:
    mdoc = read_mdoc(path)
    order = mdoc.acquisition_order()
    ranks = {section: rank for rank, section in enumerate(order)}
    pixel = options.pixel_size_a or mdoc.pixel_size_a or 1.0
    dose = [s.exposure_dose_e_a2 or 0.0 for s in mdoc.sections]
    pre = np.concatenate([[0.0], np.cumsum([dose[i] for i in order])[:-1]])
    tilts = [TiltImage(tilt_deg=s.tilt_deg, acquisition_order=ranks[i],
                       pre_exposure_e_a2=float(pre[ranks[i]]), image_index=i,
                       movie_path=s.sub_frame_name, frame_count=s.num_sub_frames,
                       nominal_defocus_a=(-s.target_defocus_um * 1e4
                                          if s.target_defocus_um is not None else None))
             for i, s in enumerate(mdoc.sections)]
    acquisition = Acquisition(pixel_size_a=pixel, voltage_kv=mdoc.voltage_kv or 300.0,
                              dose_per_tilt_e_a2=float(np.median(dose)) if dose else 0.0,
                              tilt_axis_deg=mdoc.tilt_axis_deg or 0.0)
    size = options.image_size_xy or mdoc.image_size_xy or (0, 0)
    series = TiltSeries(name=options.name or path.name.split(".")[0], acquisition=acquisition,
                        image_size_xy=tuple(size), tilts=tilts, mdoc_path=str(path))
    return Loaded(series=[series])


def _load_ctffind(path: Path, options: ConvertOptions) -> Loaded:
    ctfs = ctffind.read_ctffind_txt(path)
    angles = (imod.read_tilt_angles(options.tilts_file) if options.tilts_file
              else np.zeros(len(ctfs)))
    series = _bare_series(options.name or path.stem.removesuffix("_CTF"), angles, options)
    _attach_ctfs(series, ctfs, path)
    return Loaded(series=[series])


def _load_defocus(path: Path, options: ConvertOptions) -> Loaded:
    entries = ctffind.read_imod_defocus(path)
    count = max(e.end_view for e in entries)
    angles = {v: e.start_tilt_deg for e in entries for v in range(e.start_view, e.end_view + 1)}
    series = _bare_series(options.name or path.stem, [angles.get(v, 0.0)
                                                      for v in range(1, count + 1)], options)
    _attach_ctfs(series, ctffind.defocus_entries_per_view(entries, count), path)
    return Loaded(series=[series])


def save(loaded: Loaded, target: str, out: str | Path,
         options: ConvertOptions | None = None) -> list[Path]:
    """Write ``loaded`` in format ``target`` into folder ``out``; returns the files written."""
    options = options or ConvertOptions()
    if target not in WRITERS:
        raise ConversionError(f"unknown target format {target!r}; choose one of "
                              f"{', '.join(TARGETS)}")
    if not loaded.series and not loaded.particles:
        raise ConversionError("nothing to write: the source held no tilt series or particles "
                              "(volumes are imported into a project, not converted)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return WRITERS[target](loaded, out, options)


def convert(source: str | Path, target: str, out: str | Path,
            options: ConvertOptions | None = None) -> list[Path]:
    """Read ``source`` and write it as ``target`` into folder ``out``."""
    options = options or ConvertOptions()
    return save(load(source, options), target, out, options)


def nominal_z_rot_deg(series: TiltSeries) -> float:
    """The in-plane rotation an unaligned series starts from (its nominal tilt axis)."""
    return tilt_axis_to_z_rot_deg(series.acquisition.tilt_axis_deg)


# --- writers: one per target format -------------------------------------------------------


def _particle_pixel(loaded: Loaded, options: ConvertOptions) -> float:
    if options.pixel_size_a:
        return float(options.pixel_size_a)
    if loaded.series:
        return loaded.series[0].pixel_size_a
    raise ConversionError("writing particle coordinates in pixels needs --pixel-size (Å)")


def _tomo_size(options: ConvertOptions) -> tuple[int, int, int]:
    if options.tomo_size_xyz is None:
        raise ConversionError("writing particle coordinates from the tomogram corner needs "
                              "--tomo-size X Y Z (in pixels of --pixel-size)")
    return tuple(options.tomo_size_xyz)



def _write_relion5(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    acquisition = None
    if loaded.particles and not loaded.series:
        acquisition = Acquisition(pixel_size_a=_particle_pixel(loaded, options))
        warnings.warn(FormatWarning(
            f"particles.star: no tilt series in the source, so its optics are tomoweave's "
            f"defaults ({acquisition.voltage_kv:g} kV, Cs {acquisition.spherical_aberration_mm:g}"
            f" mm, amplitude contrast {acquisition.amplitude_contrast:g}); RELION refuses them "
            f"if tomograms.star says otherwise"), stacklevel=2)
    series = [relion5.with_nominal_defocus(s, options.defocus_a) for s in loaded.series]
    return relion5.write_relion5_export(
        out, series, loaded.particles, loaded.tomograms,
        tomo_size_xyz=options.tomo_size_xyz, acquisition=acquisition)


def _write_relion4(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    if not loaded.particles:
        raise ConversionError("RELION 3/4 export writes particles; the source has none")
    path = out / "particles.star"
    rp.write_relion4_particles(path, loaded.particles, _particle_pixel(loaded, options),
                               _tomo_size(options))
    return [path]


def _write_imod(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    written = []
    for series in loaded.series:
        base = out / series.name
        imod.write_tilt_angles(base.with_suffix(".rawtlt"), [t.tilt_deg for t in series.tilts])
        written.append(base.with_suffix(".rawtlt"))
        if series.is_aligned:
            alignments = _alignments_or_nominal(series)
            imod.write_xf(base.with_suffix(".xf"),
                          imod.alignments_to_xf(alignments, series.pixel_size_a))
            imod.write_tilt_angles(base.with_suffix(".tlt"), [a.y_tilt_deg for a in alignments])
            imod.write_tilt_angles(base.with_suffix(".xtilt"), [a.x_tilt_deg for a in alignments])
            written += [base.with_suffix(s) for s in (".xf", ".tlt", ".xtilt")]
        if all(t.ctf is not None for t in series.tilts):
            ctffind.write_imod_defocus(base.with_suffix(".defocus"),
                                       [t.ctf for t in series.tilts],
                                       [t.tilt_deg for t in series.tilts])
            written.append(base.with_suffix(".defocus"))
    for tomogram, particles in particles_by_tomogram(loaded.particles).items():
        path = out / f"{tomogram}.mod"
        write_imod_particles(path, particles, _particle_pixel(loaded, options),
                             _tomo_size(options))
        written.append(path)
    return written


def _write_aretomo(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    written = []
    for series in loaded.series:
        dark_index = {i for i, t in enumerate(series.tilts) if t.excluded and t.alignment is None}
        kept = [t for i, t in enumerate(series.tilts) if i not in dark_index]
        if series.is_aligned:
            # tilts excluded without an alignment are AreTomo's dark frames
            dark = [(i, 0, series.tilts[i].tilt_deg) for i in sorted(dark_index)]
            aln = aretomo.alignments_to_aln(
                [t.alignment for t in kept], series.pixel_size_a,
                (*series.image_size_xy, len(series.tilts)), dark)
            aretomo.write_aln(out / f"{series.name}.aln", aln)
            written.append(out / f"{series.name}.aln")
        if kept and all(t.ctf is not None for t in kept):
            ctffind.write_ctffind_txt(out / f"{series.name}_CTF.txt", [t.ctf for t in kept])
            written.append(out / f"{series.name}_CTF.txt")
    if not written:
        raise ConversionError("AreTomo export writes alignments and CTFs; the source has neither")
    return written


def _write_warp(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    written = []
    for series in loaded.series:
        warp.write_warp_xml(out / f"{series.name}.xml", series, options.tomo_size_xyz)
        warp.write_tomostar(out / f"{series.name}.tomostar", series, options.tomo_size_xyz)
        written += [out / f"{series.name}.xml", out / f"{series.name}.tomostar"]
    if loaded.particles:
        path = out / "particles.star"
        pixel = _particle_pixel(loaded, options)
        warp.write_warp_particles(path, loaded.particles, pixel, _tomo_size(options), pixel)
        written.append(path)
    return written


def _write_dynamo(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    if not loaded.particles:
        raise ConversionError("Dynamo export writes a particle table; the source has none")
    path = out / "particles.tbl"
    dynamo.write_dynamo_table(path, loaded.particles, _particle_pixel(loaded, options),
                              _tomo_size(options))
    return [path, path.with_suffix(".doc")]


def _write_eman(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    written = []
    for tomogram, particles in particles_by_tomogram(loaded.particles).items():
        info = out / "info" / f"{tomogram}_info.json"
        eman.write_eman_boxes(info, particles, _particle_pixel(loaded, options),
                              _tomo_size(options))
        parms = out / "spt" / f"particle_parms_{tomogram}.json"
        eman.write_eman_orientations(parms, particles, f"particles3d/{tomogram}.hdf")
        written += [info, parms]
    if not written:
        raise ConversionError("EMAN2 export writes particles; the source has none")
    return written


def _write_copick(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    if not loaded.particles:
        raise ConversionError("copick export writes picks; the source has none")
    copick.write_copick_config(out, ["particle"])
    written = [out / "copick_config.json"]
    for tomogram, particles in particles_by_tomogram(loaded.particles).items():
        path = copick.copick_picks_path(out, tomogram, "particle")
        copick.write_copick_picks(path, particles, _particle_pixel(loaded, options),
                                  _tomo_size(options))
        written.append(path)
    return written


def _write_ctffind(loaded: Loaded, out: Path, options: ConvertOptions) -> list[Path]:
    written = []
    for series in loaded.series:
        if all(t.ctf is not None for t in series.tilts):
            path = out / f"{series.name}_CTF.txt"
            ctffind.write_ctffind_txt(path, [t.ctf for t in series.tilts])
            written.append(path)
    if not written:
        raise ConversionError("CTFFIND export writes per-tilt CTFs; the source has none")
    return written


WRITERS = {"relion5": _write_relion5, "relion4": _write_relion4, "imod": _write_imod,
           "aretomo": _write_aretomo, "warp": _write_warp, "dynamo": _write_dynamo,
           "eman": _write_eman, "copick": _write_copick, "ctffind": _write_ctffind}
