"""RELION 3.1-style subtomograms: a particles STAR naming 3D boxes and their 3D CTF weights.

Read by ``import.subtomograms`` and written for RELION 3.1's relion_refine (the RELION plugin's
``relion.refine``). The STAR holds an optics table (``rlnImagePixelSize``, ``rlnImageSize``,
``rlnImageDimensionality`` 3, microscope values, ``rlnCtfDataAreCtfPremultiplied``) and a
particles table: ``rlnImageName`` (the subtomogram, MRC box³), ``rlnCtfImage`` (its 3D weight,
box³ with the zero frequency at index box // 2), ``rlnMicrographName`` (the tomogram),
``rlnCoordinateX/Y/Z`` and optionally ``rlnAngleRot/Tilt/Psi`` and ``rlnOriginX/Y/ZAngst``
(priors). With ``rlnCtfDataAreCtfPremultiplied`` 1 the boxes hold CTF-premultiplied data and
the weights Σ CTF²; with 0 (RELION 3.1's default) the weights are the 3D CTF model
(``Subtomogram.ctf_premultiplied``, see algorithms/averaging/particle_images.py).

Coordinates: RELION 3.1 counts ``rlnCoordinateX/Y/Z`` in tomogram pixels from voxel 0. Read
with the tomogram size they become Å from the centre (geometry.pixels_to_centered_a); without
it they stay relative to the corner (a warning says so). The writer puts the centred position
in pixels (``position_a / pixel``) in them, which RELION uses only for book-keeping, and the
centred Å in ``rlnCenteredCoordinateX/Y/ZAngst`` (RELION 5's labels) so a round trip is exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tomoweave.formats.mrc import MrcError, mrc_header_info, read_mrc, write_mrc
from tomoweave.formats.relion_particles import (
    ANGLES,
    CENTRED,
    CORNER,
    ORIGIN,
    find_relative_file,
    star_origins,
    star_rotations,
)
from tomoweave.formats.star_io import (
    StarFormatError,
    numeric_column,
    read_star_blocks,
    require_columns,
    write_star_blocks,
)
from tomoweave.geometry import matrix_to_relion_zyz, pixels_to_centered_a
from tomoweave.model import Particle, Subtomogram

PREMULTIPLIED = "rlnCtfDataAreCtfPremultiplied"


def read_relion31_subtomograms(path: str | Path, *,
                               tomo_size_xyz: tuple[int, int, int] | None = None,
                               coordinate_pixel_size_a: float | None = None,
                               ) -> tuple[list[Subtomogram], list[str]]:
    """Subtomograms (with their particles) of a RELION 3.1-style STAR, and warnings.

    Parameters
    ----------
    path : the STAR file; image paths are looked for as written, relative to it and to up to
        four folders above it (RELION writes them relative to its project).
    tomo_size_xyz : size of the tomograms in pixels, to centre ``rlnCoordinateX/Y/Z``.
    coordinate_pixel_size_a : pixel size of those coordinates (default: the subtomograms').

    Raises
    ------
    StarFormatError
        Naming the file, the row and the field: a missing file, a weight of another box size,
        no pixel size, a non-3D or non-cubic box.
    """
    path = Path(path)
    blocks = read_star_blocks(path)
    block, table = _particle_table(path, blocks)
    require_columns(table, ("rlnImageName",), path, block, "the subtomogram files")
    pixel_a, premultiplied = _optics_of_rows(path, blocks, block, table)
    base = path.resolve().parent
    warnings: list[str] = []
    files = [_file(path, base, block, table, row, "rlnImageName") for row in range(len(table))]
    weights = ([_file(path, base, block, table, row, "rlnCtfImage") for row in range(len(table))]
               if "rlnCtfImage" in table.columns else [None] * len(table))
    if weights[0] is None:
        warnings.append(f"{path.name}: no _rlnCtfImage: the subtomograms get a full weight "
                        "(no missing wedge, no CTF)")
    box = _box_size(path, block, files[0], 0, "rlnImageName")
    positions = _positions(path, block, table, pixel_a, tomo_size_xyz, coordinate_pixel_size_a,
                           warnings)
    rotations = star_rotations(path, block, table)
    tomograms = _tomogram_names(table)
    names = _particle_names(table, files)
    classes = (numeric_column(table, "rlnClassNumber", path, block).to_numpy().astype(int)
               if "rlnClassNumber" in table.columns else None)
    subtomograms = []
    for row in range(len(table)):
        for field, file in (("rlnImageName", files[row]), ("rlnCtfImage", weights[row])):
            if file is not None and (row > 0 or field == "rlnCtfImage"):
                size = _box_size(path, block, file, row, field)
                if size != box:
                    raise StarFormatError(
                        f"{path.name}: data_{block} row {row + 1}: _{field} {file.name} is "
                        f"{size}³ but the subtomograms are {box}³")
        particle = Particle(name=names[row], tomogram=tomograms[row],
                            position_a=tuple(float(v) for v in positions[row]),
                            rotation=rotations[row].tolist(),
                            class_id=None if classes is None else int(classes[row]))
        subtomograms.append(Subtomogram(
            name=names[row], particle=particle, path=str(files[row]),
            weight_path=None if weights[row] is None else str(weights[row]),
            ctf_premultiplied=bool(premultiplied[row]), pixel_size_a=float(pixel_a[row]),
            box_size_px=box))
    if len(set(np.round(pixel_a, 4))) > 1:
        raise StarFormatError(f"{path.name}: optics groups with pixel sizes "
                              f"{sorted(set(np.round(pixel_a, 4)))} Å; import one at a time")
    return subtomograms, warnings


def _particle_table(path: Path, blocks: dict) -> tuple[str, pd.DataFrame]:
    if isinstance(blocks.get("particles"), pd.DataFrame):
        return "particles", blocks["particles"]
    for name, table in blocks.items():
        if isinstance(table, pd.DataFrame) and "rlnImageName" in table.columns:
            return name, table
    raise StarFormatError(f"{path.name}: no data_particles table with _rlnImageName")


def _optics_of_rows(path: Path, blocks: dict, block: str, table: pd.DataFrame):
    """(pixel size Å, premultiplied flag) per particle row, from the optics group."""
    optics = blocks.get("optics")
    count = len(table)
    if isinstance(optics, pd.DataFrame) and "rlnImagePixelSize" in optics.columns:
        groups = (numeric_column(table, "rlnOpticsGroup", path, block).astype(int).to_numpy()
                  if "rlnOpticsGroup" in table.columns else np.ones(count, dtype=int))
        ids = (numeric_column(optics, "rlnOpticsGroup", path, "optics").astype(int).to_numpy()
               if "rlnOpticsGroup" in optics.columns else np.arange(1, len(optics) + 1))
        lookup = {int(g): i for i, g in enumerate(ids)}
        unknown = sorted(set(groups.tolist()) - set(lookup))
        if unknown:
            raise StarFormatError(f"{path.name}: data_{block}: _rlnOpticsGroup {unknown[0]} "
                                  "is not in data_optics")
        rows = [lookup[int(g)] for g in groups]
        pixel = numeric_column(optics, "rlnImagePixelSize", path, "optics").to_numpy()[rows]
        flag = (numeric_column(optics, PREMULTIPLIED, path, "optics").to_numpy()[rows]
                if PREMULTIPLIED in optics.columns else np.zeros(count))
    elif "rlnPixelSize" in table.columns or "rlnImagePixelSize" in table.columns:
        column = "rlnImagePixelSize" if "rlnImagePixelSize" in table.columns else "rlnPixelSize"
        pixel = numeric_column(table, column, path, block).to_numpy()
        flag = (numeric_column(table, PREMULTIPLIED, path, block).to_numpy()
                if PREMULTIPLIED in table.columns else np.zeros(count))
    elif {"rlnDetectorPixelSize", "rlnMagnification"} <= set(table.columns):  # RELION 3.0
        pixel = (numeric_column(table, "rlnDetectorPixelSize", path, block).to_numpy() * 1e4
                 / numeric_column(table, "rlnMagnification", path, block).to_numpy())
        flag = np.zeros(count)
    else:
        raise StarFormatError(
            f"{path.name}: no pixel size: data_optics needs _rlnImagePixelSize (or "
            f"data_{block} _rlnPixelSize, or _rlnDetectorPixelSize with _rlnMagnification)")
    if not np.all(pixel > 0):
        raise StarFormatError(f"{path.name}: _rlnImagePixelSize must be > 0, got "
                              f"{float(np.min(pixel))}")
    return pixel.astype(float), flag.astype(float) != 0


def _file(path: Path, base: Path, block: str, table: pd.DataFrame, row: int,
          field: str) -> Path:
    written = str(table[field].iloc[row])
    found = find_relative_file(base, written)
    if found is None:
        raise StarFormatError(f"{path.name}: data_{block} row {row + 1}: _{field} {written}: "
                              f"file not found (looked beside the STAR and up to four folders "
                              f"above it)")
    return found


def _box_size(path: Path, block: str, file: Path, row: int, field: str) -> int:
    try:
        shape = mrc_header_info(file)["shape"]
    except MrcError as error:
        raise StarFormatError(f"{path.name}: data_{block} row {row + 1}: _{field}: "
                              f"{error}") from None
    if len(shape) != 3 or len(set(shape)) != 1:
        raise StarFormatError(f"{path.name}: data_{block} row {row + 1}: _{field} {file.name}: "
                              f"shape {tuple(shape)}, expected a cubic 3D box")
    return int(shape[0])


def _positions(path, block, table, pixel_a, tomo_size_xyz, coordinate_pixel_a, warnings):
    if all(c in table.columns for c in CENTRED):
        centred = np.stack([numeric_column(table, c, path, block) for c in CENTRED], axis=1)
    elif all(c in table.columns for c in CORNER):
        corner = np.stack([numeric_column(table, c, path, block) for c in CORNER], axis=1)
        pixel = coordinate_pixel_a or pixel_a[:, None]
        if tomo_size_xyz is not None:
            centred = pixels_to_centered_a(corner, tuple(tomo_size_xyz), 1.0) * pixel
        else:
            centred = corner * pixel
            warnings.append(f"{path.name}: positions are relative to the tomogram corner "
                            "(give the tomogram size to centre them)")
    else:
        centred = np.zeros((len(table), 3))
        warnings.append(f"{path.name}: no particle coordinates; positions set to 0")
    return centred - star_origins(path, block, table)


def _tomogram_names(table: pd.DataFrame) -> list[str]:
    for column in ("rlnTomoName", "rlnMicrographName"):
        if column in table.columns:
            return [Path(str(v).split(":")[0]).stem if column == "rlnMicrographName" else str(v)
                    for v in table[column]]
    return ["tomogram"] * len(table)


def _particle_names(table: pd.DataFrame, files: list[Path]) -> list[str]:
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{stem}_{row + 1:06d}" for row, stem in enumerate(stems)]


def write_relion31_subtomograms(path: str | Path, subtomograms: Sequence[Subtomogram],
                                resolve_path: Callable[[str], Path | str], *,
                                voltage_kv: float = 300.0, spherical_aberration_mm: float = 2.7,
                                amplitude_contrast: float = 0.07) -> Path:
    """Write a RELION 3.1 particles STAR for ``subtomograms`` (one box and pixel size).

    Image paths are written relative to the STAR's folder when they share a root, so the
    folder can be moved; ``resolve_path`` turns the items' project paths into files. Plain and
    premultiplied subtomograms go into two optics groups (the flag is per group in RELION).
    """
    path = Path(path)
    if not subtomograms:
        raise ValueError("write_relion31_subtomograms: no subtomograms")
    box, pixel = subtomograms[0].box_size_px, subtomograms[0].pixel_size_a
    for item in subtomograms:
        if item.box_size_px != box or not np.isclose(item.pixel_size_a, pixel, rtol=1e-4):
            raise ValueError(f"{item.name}: box {item.box_size_px} px at {item.pixel_size_a} Å "
                             f"differs from {box} px at {pixel} Å: one STAR holds one box")
    folder = path.resolve().parent

    def written(stored: str) -> str:
        file = Path(resolve_path(stored)).resolve()
        try:
            return os.path.relpath(file, folder)
        except ValueError:
            return str(file)

    flags = sorted({int(s.ctf_premultiplied) for s in subtomograms})
    group_of = {flag: index + 1 for index, flag in enumerate(flags)}
    optics = pd.DataFrame([{
        "rlnOpticsGroup": group_of[flag], "rlnOpticsGroupName": f"opticsGroup{group_of[flag]}",
        "rlnVoltage": voltage_kv, "rlnSphericalAberration": spherical_aberration_mm,
        "rlnAmplitudeContrast": amplitude_contrast, "rlnImagePixelSize": pixel,
        "rlnImageSize": box, "rlnImageDimensionality": 3, PREMULTIPLIED: flag}
        for flag in flags])
    positions = np.array([s.particle.position_a for s in subtomograms], dtype=float)
    angles = np.array([matrix_to_relion_zyz(s.particle.rotation_matrix)
                       for s in subtomograms]).reshape(-1, 3)
    table: dict[str, list] = {
        "rlnMicrographName": [s.particle.tomogram for s in subtomograms],
        **{c: (positions[:, i] / pixel).tolist() for i, c in enumerate(CORNER)},
        **{c: positions[:, i].tolist() for i, c in enumerate(CENTRED)},
        "rlnImageName": [written(s.path) for s in subtomograms],
    }
    if all(s.weight_path for s in subtomograms):
        table["rlnCtfImage"] = [written(s.weight_path) for s in subtomograms]
    table.update({c: angles[:, i].tolist() for i, c in enumerate(ANGLES)})
    table.update({c: [0.0] * len(subtomograms) for c in ORIGIN})
    table["rlnOpticsGroup"] = [group_of[int(s.ctf_premultiplied)] for s in subtomograms]
    halves = [getattr(s.particle, "half_set", None) for s in subtomograms]
    if all(h in (1, 2) for h in halves):
        table["rlnRandomSubset"] = halves
    classes = [s.particle.class_id for s in subtomograms]
    if any(c is not None for c in classes):  # RELION counts classes from 1
        table["rlnClassNumber"] = [c if c is not None else 1 for c in classes]
    write_star_blocks(path, {"optics": optics, "particles": pd.DataFrame(table)})
    return path


def export_relion31_folder(out: str | Path, subtomograms: Sequence[Subtomogram],
                           resolve_path: Callable[[str], Path | str], *,
                           voltage_kv: float = 300.0, spherical_aberration_mm: float = 2.7,
                           amplitude_contrast: float = 0.07) -> Path:
    """``out/particles.star`` for RELION 3.1's relion_refine and relion_reconstruct.

    RELION 3.1 squares ``rlnCtfImage`` for the weight, also for CTF-premultiplied data, so a
    premultiplied subtomogram's weight (Σ CTF²) is written as its square root into
    ``out/ctf/``; plain subtomograms' CTF images are named as they are.

    Parameters
    ----------
    out : folder to write into (created).
    subtomograms : one box size and pixel size.
    resolve_path : turns the items' stored paths into files.
    voltage_kv, spherical_aberration_mm, amplitude_contrast : the optics table's values
        (kV, mm, fraction).

    Raises
    ------
    ValueError
        Several box sizes, no subtomograms, or an unreadable weight (MrcError).
    """
    out = Path(out)
    written = []
    for item in subtomograms:
        if item.ctf_premultiplied and item.weight_path:
            weight, _ = read_mrc(resolve_path(item.weight_path))
            root = np.sqrt(np.maximum(weight, 0.0)).astype(np.float32)
            path = write_mrc(out / "ctf" / f"{item.name}_ctf.mrc", root, item.pixel_size_a)
            item = item.model_copy(update={"weight_path": str(path.resolve())})
        written.append(item)
    return write_relion31_subtomograms(
        out / "particles.star", written, resolve_path, voltage_kv=voltage_kv,
        spherical_aberration_mm=spherical_aberration_mm, amplitude_contrast=amplitude_contrast)
