"""RELION 5 tomography: tomograms.star, per-tilt-series STAR files and the optimisation set.

RELION 5 uses the same projection model as tomoweave (``geometry.projection``): per tilt
``P = S(shift) Rz(rlnTomoZRot) Ry(rlnTomoYTilt) Rx(rlnTomoXTilt)`` about the tomogram centre
``int(N/2)``, shifts in Å (``rlnTomoX/YShiftAngst``). So alignments are copied one to one: no
sign or origin changes. Defocus U/V/angle are copied (Å, degrees); RELION's nominal defocus is
SerialEM's target defocus in µm (negative = underfocus), stored here as positive Å. Particles are
in ``formats.relion_particles``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tomoweave.formats import FormatWarning
from tomoweave.formats.relion_particles import write_relion5_particles
from tomoweave.formats.star_io import (
    StarFormatError,
    numeric_column,
    read_star_blocks,
    relion_image_name,
    require_columns,
    split_relion_image_name,
    star_table,
    write_star_blocks,
)
from tomoweave.model import (
    Acquisition,
    CtfTilt,
    Particle,
    TiltAlignment,
    TiltImage,
    TiltSeries,
    Tomogram,
    as_particle_table,
)

ALIGNMENT_COLUMNS = ("rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst",
                     "rlnTomoYShiftAngst")
CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
GLOBAL_COLUMNS = ("rlnTomoName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                  "rlnTomoTiltSeriesPixelSize", "rlnTomoTiltSeriesStarFile")


@dataclass
class Relion5Tomogram:
    """One row of tomograms.star: the acquisition and where its tilt-series STAR is."""

    name: str
    acquisition: Acquisition
    tilt_series_star: str
    hand: float = -1.0
    original_pixel_size_a: float | None = None
    binning: float | None = None
    size_xyz: tuple[int, int, int] | None = None
    reconstruction: str | None = None

    def tomogram(self) -> Tomogram | None:
        """The reconstructed tomogram as a model object, when tomograms.star names one."""
        if not self.reconstruction or not self.size_xyz or not self.binning:
            return None
        size = tuple(int(round(n / self.binning)) for n in self.size_xyz)
        return Tomogram(name=self.name, path=self.reconstruction, tilt_series=self.name,
                        pixel_size_a=self.acquisition.pixel_size_a * self.binning,
                        size_xyz=size, binning=self.binning, acquisition=self.acquisition)


def read_tomograms_star(path: str | Path) -> list[Relion5Tomogram]:
    """Rows of a RELION 5 tomograms.star (block ``global``)."""
    path = Path(path)
    table = star_table(path, "global")
    require_columns(table, GLOBAL_COLUMNS, path, "global", "the tilt series' acquisition")
    numbers = {c: numeric_column(table, c, path, "global") for c in GLOBAL_COLUMNS[1:5]}
    entries = []
    for row in range(len(table)):
        value = table.iloc[row]
        acquisition = Acquisition(
            pixel_size_a=numbers["rlnTomoTiltSeriesPixelSize"].iloc[row],
            voltage_kv=numbers["rlnVoltage"].iloc[row],
            spherical_aberration_mm=numbers["rlnSphericalAberration"].iloc[row],
            amplitude_contrast=numbers["rlnAmplitudeContrast"].iloc[row],
        )
        size = None
        if all(f"rlnTomoSize{a}" in table.columns for a in "XYZ"):
            size = tuple(int(value[f"rlnTomoSize{a}"]) for a in "XYZ")
        entries.append(Relion5Tomogram(
            name=str(value["rlnTomoName"]), acquisition=acquisition,
            tilt_series_star=str(value["rlnTomoTiltSeriesStarFile"]),
            hand=float(value.get("rlnTomoHand", -1.0)),
            original_pixel_size_a=_optional_float(value, "rlnMicrographOriginalPixelSize"),
            binning=_optional_float(value, "rlnTomoTomogramBinning"),
            size_xyz=size,  # type: ignore[arg-type]
            reconstruction=_optional_str(value, "rlnTomoReconstructedTomogram"),
        ))
    return entries


def locate_tilt_series_star(tomograms_star: str | Path, entry: Relion5Tomogram) -> Path | None:
    """The tilt-series STAR of ``entry`` (see ``locate_file``)."""
    return locate_file(tomograms_star, entry.tilt_series_star)


def locate_file(tomograms_star: str | Path, written: str) -> Path | None:
    """A file named in tomograms.star: as written relative to the RELION project (a folder above
    tomograms.star), else relative to tomograms.star, else beside it by name."""
    base = Path(tomograms_star).resolve().parent
    path = Path(written)
    candidates = [path] if path.is_absolute() else [
        *(parent / path for parent in [base, *base.parents][:5]), base / path.name]
    return next((c for c in candidates if c.exists()), None)


def read_relion5(
    tomograms_star: str | Path, image_size_xy: tuple[int, int] | None = None,
    skip_missing: bool = True,
) -> list[TiltSeries]:
    """Tilt series of a tomograms.star whose tilt-series STAR files are found.

    RELION 5 does not store the tilt-image size; unless ``image_size_xy`` is given it is taken
    as the unbinned tomogram size in X and Y (rlnTomoSizeX/Y), which RELION sets to it.
    """
    series = []
    for entry in read_tomograms_star(tomograms_star):
        star = locate_tilt_series_star(tomograms_star, entry)
        if star is None:
            if skip_missing:
                continue
            raise StarFormatError(f"{Path(tomograms_star).name}: {entry.name}: tilt-series STAR "
                                  f"{entry.tilt_series_star} not found")
        size = image_size_xy or (entry.size_xyz[:2] if entry.size_xyz else (0, 0))
        series.append(read_tilt_series_star(star, entry, size))
    return series


def read_tilt_series_star(
    path: str | Path, entry: Relion5Tomogram, image_size_xy: tuple[int, int]
) -> TiltSeries:
    """One RELION 5 tilt-series STAR (block ``data_<name>``) as a TiltSeries."""
    path = Path(path)
    blocks = read_star_blocks(path)
    block = entry.name if entry.name in blocks else next(iter(blocks))
    table = star_table(path, block, blocks)
    tilt_column = ("rlnTomoNominalStageTiltAngle" if "rlnTomoNominalStageTiltAngle"
                   in table.columns else "rlnTomoYTilt")
    require_columns(table, [tilt_column], path, block, "the tilt angle of each image")
    number = {c: numeric_column(table, c, path, block) for c in table.columns
              if c not in ("rlnMicrographMovieName", "rlnMicrographName", "rlnMicrographMetadata",
                           "rlnCtfImage", "rlnTomoName", "rlnTomoTiltSeriesStarFile")}
    if any(c in table.columns for c in ALIGNMENT_COLUMNS):
        require_columns(table, ALIGNMENT_COLUMNS, path, block, "the tilt alignment")
    if any(c in table.columns for c in CTF_COLUMNS):
        require_columns(table, CTF_COLUMNS, path, block, "the per-tilt CTF")
    pre = number.get("rlnMicrographPreExposure", pd.Series(np.zeros(len(table))))
    ranks = np.argsort(np.argsort(pre.to_numpy(), kind="stable"), kind="stable")
    tilts = [_tilt_from_row(table, number, row, tilt_column, int(ranks[row]), pre.iloc[row])
             for row in range(len(table))]
    acquisition = entry.acquisition.model_copy(update={
        "dose_per_tilt_e_a2": _dose_step(pre.to_numpy()),
        "tilt_axis_deg": float(number["rlnTomoNominalTiltAxisAngle"].iloc[0])
        if "rlnTomoNominalTiltAxisAngle" in number else 0.0,
    })
    return TiltSeries(name=entry.name, acquisition=acquisition,
                      image_size_xy=tuple(int(v) for v in image_size_xy), tilts=tilts)


def _tilt_from_row(table, number, row: int, tilt_column: str, rank: int, pre: float) -> TiltImage:
    def get(column: str) -> float | None:
        return float(number[column].iloc[row]) if column in number else None

    def text(column: str) -> str | None:
        return str(table[column].iloc[row]) if column in table.columns else None

    alignment = None
    if "rlnTomoYTilt" in number:
        alignment = TiltAlignment(
            x_tilt_deg=get("rlnTomoXTilt"), y_tilt_deg=get("rlnTomoYTilt"),
            z_rot_deg=get("rlnTomoZRot"), shift_x_a=get("rlnTomoXShiftAngst"),
            shift_y_a=get("rlnTomoYShiftAngst"))
    ctf = None
    if "rlnDefocusU" in number:
        resolution = get("rlnCtfMaxResolution")
        ctf = CtfTilt(defocus_u_a=get("rlnDefocusU"), defocus_v_a=get("rlnDefocusV"),
                      astigmatism_angle_deg=get("rlnDefocusAngle"),
                      phase_shift_deg=get("rlnPhaseShift") or 0.0,
                      fit_resolution_a=resolution if resolution and resolution > 0 else None,
                      score=get("rlnCtfFigureOfMerit"), diagnostic_path=text("rlnCtfImage"))
    nominal = get("rlnTomoNominalDefocus")
    frames = get("rlnTomoTiltMovieFrameCount")
    image, index = text("rlnMicrographName"), 0
    if image:
        stack_index, image = split_relion_image_name(image)
        index = stack_index or 0
    return TiltImage(
        tilt_deg=get(tilt_column), acquisition_order=rank, pre_exposure_e_a2=max(0.0, pre),
        image_path=image, image_index=index, movie_path=text("rlnMicrographMovieName"),
        frame_count=int(frames) if frames else None,
        nominal_defocus_a=-nominal * 1e4 if nominal is not None else None,
        alignment=alignment, ctf=ctf)


def write_relion5(
    out_dir: str | Path,
    series: Sequence[TiltSeries],
    tomo_size_xyz: tuple[int, int, int] | None = None,
    tomograms: Sequence[Tomogram] = (),
    hand: float = -1.0,
) -> Path:
    """Write ``tomograms.star`` and ``tilt_series/<name>.star``; returns the tomograms.star path.

    Only included (not excluded) tilts are written, as RELION 5 lists the tilts it uses.
    ``rlnTomoSize`` is the unbinned tomogram size: from ``tomograms`` (matched by tilt series),
    else ``tomo_size_xyz``, else the image size with Z = X / 4 (it only sets RELION's default
    reconstruction box; positions and projections are relative to the centre).

    Every file name is written relative to ``out_dir`` (absolute paths of images and
    tomograms are turned into relative ones), so RELION run from ``out_dir`` finds them all, as
    it reads paths relative to the folder it runs in (its project).
    """
    out = Path(out_dir)
    by_series = {t.tilt_series or t.name: t for t in tomograms}
    rows = []
    for item in series:
        star = out / "tilt_series" / f"{item.name}.star"
        write_star_blocks(star, {item.name: tilt_series_table(item, out)})
        tomogram = by_series.get(item.name)
        size = _unbinned_size(item, tomogram, tomo_size_xyz)
        acq = item.acquisition
        row = {"rlnTomoName": item.name, "rlnVoltage": acq.voltage_kv,
               "rlnSphericalAberration": acq.spherical_aberration_mm,
               "rlnAmplitudeContrast": acq.amplitude_contrast,
               "rlnMicrographOriginalPixelSize": acq.pixel_size_a, "rlnTomoHand": hand,
               "rlnTomoTiltSeriesPixelSize": acq.pixel_size_a,
               "rlnTomoTiltSeriesStarFile": f"tilt_series/{item.name}.star",
               "rlnTomoTomogramBinning": tomogram.binning if tomogram else 1.0,
               "rlnTomoSizeX": size[0], "rlnTomoSizeY": size[1], "rlnTomoSizeZ": size[2]}
        if tomogram is not None:
            row["rlnTomoReconstructedTomogram"] = relative_to(tomogram.path, out)
        rows.append(row)
    path = out / "tomograms.star"
    write_star_blocks(path, {"global": pd.DataFrame(rows)})
    return path


def relative_to(path: str, folder: str | Path) -> str:
    """An absolute ``path`` as seen from ``folder`` (relative, ``..`` where needed); a relative
    one unchanged (it already is relative to whatever the caller chose)."""
    if not Path(path).is_absolute():
        return path
    return os.path.relpath(path, Path(folder).resolve())


def write_relion5_export(
    out_dir: str | Path,
    series: Sequence[TiltSeries] = (),
    particles: Sequence[Particle] = (),
    tomograms: Sequence[Tomogram] = (),
    *,
    tomo_size_xyz: tuple[int, int, int] | None = None,
    acquisition: Acquisition | None = None,
) -> list[Path]:
    """A RELION 5 project folder: tomograms.star, tilt_series/*.star, particles.star and, with
    both, optimisation_set.star; returns the files written.

    Particles' optics come from the tilt series (else the tomograms) of their tomogram, else
    ``acquisition``; item paths must be absolute (they are written relative to ``out_dir``, so
    RELION is run from there). The one function behind ``export.relion5`` and
    ``tomoweave convert --to relion5``: protocols that write particles for RELION (refined
    poses, classes) call it too.
    """
    out = Path(out_dir)
    written: list[Path] = []
    if series:
        written.append(write_relion5(out, series, tomo_size_xyz, tomograms))
        written += [out / "tilt_series" / f"{s.name}.star" for s in series]
    if particles:
        acquisitions = {name: t.acquisition for t in tomograms if t.acquisition is not None
                        for name in (t.name, t.tilt_series or t.name)}
        acquisitions.update({s.name: s.acquisition for s in series})
        if acquisition is not None:
            missing = set(as_particle_table(particles).tomogram_names()) - set(acquisitions)
            acquisitions.update({name: acquisition for name in missing})
        write_relion5_particles(out / "particles.star", particles, acquisitions)
        written.append(out / "particles.star")
    if series and particles:
        write_optimisation_set(out / "optimisation_set.star", "particles.star", "tomograms.star")
        written.append(out / "optimisation_set.star")
    return written


def _unbinned_size(item: TiltSeries, tomogram: Tomogram | None, size_xyz) -> tuple[int, ...]:
    if tomogram is not None:
        return tuple(int(round(n * tomogram.binning)) for n in tomogram.size_xyz)
    if size_xyz is not None:
        return tuple(int(n) for n in size_xyz)
    x, y = item.image_size_xy
    if not x or not y:
        raise ValueError(f"{item.name}: RELION 5's tomograms.star needs the tomogram size; the "
                         f"tilt-image size is unknown too (give --tomo-size X Y Z or --image-size)")
    return (x, y, max(1, x // 4))


def tilt_series_table(item: TiltSeries, out_dir: str | Path | None = None) -> pd.DataFrame:
    """The per-tilt STAR table of one tilt series (included tilts only); absolute image paths
    are written relative to ``out_dir`` when given.

    RELION 5 cannot load a tilt series without _rlnDefocusU/V/Angle (TomogramSet::loadTomogram):
    tilts without a CTF estimate get their nominal defocus (astigmatism 0), with a
    ``FormatWarning`` saying so; a tilt with neither is refused.
    """
    tilts = item.included_tilts()

    def name(path: str | None) -> str | None:
        return relative_to(path, out_dir) if path and out_dir is not None else path

    table: dict[str, list] = {
        "rlnTomoNominalStageTiltAngle": [t.tilt_deg for t in tilts],
        "rlnTomoNominalTiltAxisAngle": [item.acquisition.tilt_axis_deg] * len(tilts),
        "rlnMicrographPreExposure": [t.pre_exposure_e_a2 for t in tilts],
    }
    _optional(table, "rlnMicrographMovieName", [name(t.movie_path) for t in tilts], "")
    _optional(table, "rlnTomoTiltMovieFrameCount", [t.frame_count for t in tilts], 1)
    stacked = len({t.image_path for t in tilts}) < len(tilts)  # one stack: RELION's "n@stack"
    _optional(table, "rlnMicrographName",
              [relion_image_name(name(t.image_path), t.image_index if stacked else None)
               if t.image_path else None for t in tilts], "")
    _optional(table, "rlnTomoNominalDefocus",
              [None if t.nominal_defocus_a is None else -t.nominal_defocus_a / 1e4
               for t in tilts], 0.0)
    ctfs = _ctfs_or_nominal(item, tilts)
    table["rlnDefocusU"] = [c.defocus_u_a for c in ctfs]
    table["rlnDefocusV"] = [c.defocus_v_a for c in ctfs]
    table["rlnDefocusAngle"] = [c.astigmatism_angle_deg for c in ctfs]
    table["rlnPhaseShift"] = [c.phase_shift_deg for c in ctfs]
    _optional(table, "rlnCtfFigureOfMerit", [c.score for c in ctfs], 0.0)
    _optional(table, "rlnCtfMaxResolution", [c.fit_resolution_a for c in ctfs], 0.0)
    _optional(table, "rlnCtfImage", [name(c.diagnostic_path) for c in ctfs], "")
    if all(t.alignment is not None for t in tilts):
        alignments = [t.alignment for t in tilts]
        for column, field in zip(ALIGNMENT_COLUMNS, ("x_tilt_deg", "y_tilt_deg", "z_rot_deg",
                                                     "shift_x_a", "shift_y_a"), strict=True):
            table[column] = [getattr(a, field) for a in alignments]
    return pd.DataFrame(table)


def with_nominal_defocus(series: TiltSeries, defocus_a: float | None) -> TiltSeries:
    """``series`` with ``defocus_a`` as the nominal defocus of tilts that have none (a copy;
    ``series`` itself when ``defocus_a`` is None)."""
    if defocus_a is None or all(t.nominal_defocus_a for t in series.tilts):
        return series
    copy = series.model_copy(deep=True)
    for tilt in copy.tilts:
        tilt.nominal_defocus_a = tilt.nominal_defocus_a or float(defocus_a)
    return copy


def defocus_missing(item: TiltSeries) -> str | None:
    """Why RELION 5 could not load ``item`` for want of a defocus (None when every included tilt
    has a CTF estimate or a nominal defocus): RELION needs _rlnDefocusU/V/Angle per tilt."""
    unknown = next((t for t in item.included_tilts()
                    if t.ctf is None and not t.nominal_defocus_a), None)
    if unknown is None:
        return None
    return (f"{item.name}: RELION 5 needs a defocus for every tilt (_rlnDefocusU); tilt "
            f"{unknown.tilt_deg:g}° has no CTF estimate and no nominal defocus: estimate or "
            f"import the CTF first, or give the nominal defocus (--defocus Å)")


def _ctfs_or_nominal(item: TiltSeries, tilts: Sequence[TiltImage]) -> list[CtfTilt]:
    missing = [t for t in tilts if t.ctf is None]
    if not missing:
        return [t.ctf for t in tilts]
    if (reason := defocus_missing(item)) is not None:
        raise ValueError(reason)
    values = sorted({round(t.nominal_defocus_a) for t in missing})
    warnings.warn(FormatWarning(
        f"{item.name}: {len(missing)} of {len(tilts)} tilts have no CTF estimate; their "
        f"_rlnDefocusU/V are the nominal defocus ({', '.join(map(str, values[:3]))} Å, no "
        f"astigmatism)"), stacklevel=3)
    return [t.ctf or CtfTilt(defocus_u_a=t.nominal_defocus_a, defocus_v_a=t.nominal_defocus_a,
                             astigmatism_angle_deg=0.0) for t in tilts]


def _optional(table: dict, column: str, values: list, fill) -> None:
    if any(v is not None for v in values):
        table[column] = [fill if v is None else v for v in values]


def write_optimisation_set(path: str | Path, particles_star: str, tomograms_star: str) -> None:
    """RELION 5's optimisation set: a one-row block naming the particles and tomograms files."""
    write_star_blocks(path, {"": {"rlnTomoParticlesFile": particles_star,
                                  "rlnTomoTomogramsFile": tomograms_star}})


def read_optimisation_set(path: str | Path) -> dict[str, Path]:
    """The files an optimisation set names (particles, tomograms), found as ``locate_file``
    does: RELION writes them relative to its project (``subtomo/particles.star``)."""
    path = Path(path)
    blocks = read_star_blocks(path)
    values = next(iter(blocks.values()))
    row = values if isinstance(values, dict) else values.iloc[0].to_dict()
    files = {}
    for key, name in (("rlnTomoParticlesFile", "particles"), ("rlnTomoTomogramsFile", "tomograms")):
        if key in row:
            found = locate_file(path, str(row[key]))
            if found is None:
                raise StarFormatError(f"{path.name}: _{key} {row[key]} not found (looked "
                                      f"beside it and in the folders above)")
            files[name] = found
    if not files:
        raise StarFormatError(f"{path.name}: neither _rlnTomoParticlesFile nor "
                              f"_rlnTomoTomogramsFile; not an optimisation set")
    return files


def _dose_step(pre_exposures: np.ndarray) -> float:
    steps = np.diff(np.sort(pre_exposures))
    steps = steps[steps > 1e-6]
    return float(np.median(steps)) if len(steps) else 0.0


def _optional_float(row: pd.Series, column: str) -> float | None:
    return float(row[column]) if column in row.index and pd.notna(row[column]) else None


def _optional_str(row: pd.Series, column: str) -> str | None:
    return str(row[column]) if column in row.index and pd.notna(row[column]) else None
