"""Warp/WarpTools tilt series: the per-series XML and the .tomostar table.

Warp projects a point ``p`` of the volume (Å from voxel 0) into tilt ``t`` as (TiltSeries.cs,
``GetPositionInAllTilts``)::

    image_Å = Euler(0, angle_t, −axis_t) (p − V/2) + (AxisOffsetX_t, AxisOffsetY_t) + I/2 − movement_t

where ``Euler`` is RELION's matrix convention, ``Euler(0, a, −b) = Rz(b) Ry(−a)``, ``V`` and ``I``
the volume and image sizes in Å (centre at ``N/2``, not ``N//2``) and ``movement`` the
GridMovementX/Y value. Hence, in the projection model: ``y_tilt_deg = −angle``,
``z_rot_deg = axis``, and ``shift = offset − movement − (R δ)_xy + ε`` with ``δ = (N/2 − N//2)``
pixels of the volume and ``ε = (N/2 − N//2)`` pixels of the image (both zero for even sizes).
WarpTools stores the angles with the opposite sign of the stage (the movie of angle 46 is the
stage's −46°), so ``y_tilt_deg`` comes out as the stage tilt, as in RELION 5. Per-tilt CTF:
defocus (GridCTF, µm) ± GridCTFDefocusDelta, angle GridCTFDefocusAngle, phase (GridCTFPhase, π).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tomoweave.formats.star_io import (
    numeric_column,
    require_columns,
    star_table,
    write_star_blocks,
)
from tomoweave.geometry import projection_matrix
from tomoweave.model import Acquisition, CtfTilt, TiltAlignment, TiltImage, TiltSeries

_LISTS = ("Angles", "Dose", "AxisAngle", "AxisOffsetX", "AxisOffsetY")
TOMOSTAR_COLUMNS = ("wrpMovieName", "wrpAngleTilt", "wrpAxisAngle", "wrpDose",
                    "wrpAxisOffsetX", "wrpAxisOffsetY")


class WarpFormatError(ValueError):
    """A malformed Warp file; names the file, element/column and what was expected."""


def _half_pixel(size: Sequence[int] | None, pixel_size_a: float) -> np.ndarray:
    """(N/2 − N//2) × pixel size per axis: where Warp's centre is relative to ours, in Å."""
    if size is None:
        return np.zeros(2)
    size = np.asarray(size, dtype=float)
    return (size / 2 - size // 2) * pixel_size_a


def warp_to_alignment(angle: float, axis: float, offset_xy, pixel_size_a: float,
                      tomo_size_xyz=None, image_size_xy=None) -> TiltAlignment:
    """One tilt's Warp parameters (offsets in Å, movement already subtracted) to an alignment."""
    y_tilt, z_rot = -float(angle), float(axis)
    rotation = projection_matrix(y_tilt, 0.0, z_rot)[:3, :3]
    delta = _half_pixel(tomo_size_xyz, pixel_size_a) if tomo_size_xyz is not None else np.zeros(3)
    epsilon = _half_pixel(image_size_xy, pixel_size_a)
    shift = np.asarray(offset_xy, float) - (rotation @ delta)[:2] + epsilon
    return TiltAlignment(y_tilt_deg=y_tilt, z_rot_deg=z_rot, shift_x_a=float(shift[0]),
                         shift_y_a=float(shift[1]))


def alignment_to_warp(alignment: TiltAlignment, pixel_size_a: float, tomo_size_xyz=None,
                      image_size_xy=None) -> tuple[float, float, float, float]:
    """(angle, axis, offset_x_a, offset_y_a) of Warp for one alignment (inverse of the above)."""
    # a scale below 0.1 % (e.g. rounding in an .xf) is dropped: Warp only has a global one
    if abs(alignment.x_tilt_deg) > 1e-6 or abs(alignment.magnification - 1.0) > 1e-3:
        raise WarpFormatError("Warp has no per-tilt X tilt or magnification; this alignment has "
                              f"x_tilt {alignment.x_tilt_deg}° and magnification "
                              f"{alignment.magnification}")
    rotation = projection_matrix(alignment.y_tilt_deg, 0.0, alignment.z_rot_deg)[:3, :3]
    delta = _half_pixel(tomo_size_xyz, pixel_size_a) if tomo_size_xyz is not None else np.zeros(3)
    epsilon = _half_pixel(image_size_xy, pixel_size_a)
    offset = np.array([alignment.shift_x_a, alignment.shift_y_a]) + (rotation @ delta)[:2] - epsilon
    return -alignment.y_tilt_deg, alignment.z_rot_deg, float(offset[0]), float(offset[1])


def _values(root: ET.Element, tag: str, path: Path, kind=float) -> list | None:
    element = root.find(tag)
    if element is None:
        return None
    words = (element.text or "").split()
    try:
        return [kind(w) for w in words]
    except ValueError as error:
        raise WarpFormatError(f"{path.name}: <{tag}>: expected numbers, got {error}") from error


def _grid(root: ET.Element, tag: str, count: int) -> np.ndarray | None:
    """Per-tilt values of a Warp grid: the mean over X/Y nodes, Depth 1 broadcast to all tilts."""
    element = root.find(tag)
    if element is None or not len(element):
        return None
    depth = int(element.get("Depth", "1"))
    sums, counts = np.zeros(depth), np.zeros(depth)
    for node in element:
        z = int(node.get("Z", "0"))
        sums[z] += float(node.get("Value", "0"))
        counts[z] += 1
    per_depth = sums / np.maximum(counts, 1)
    if depth == count:
        return per_depth
    return np.full(count, per_depth.mean())


def _params(root: ET.Element, tag: str) -> dict[str, str]:
    element = root.find(tag)
    return {} if element is None else {p.get("Name", ""): p.get("Value", "") for p in element}


def read_warp_xml(
    path: str | Path, pixel_size_a: float | None = None,
    image_size_xy: tuple[int, int] | None = None,
    tomo_size_xyz: tuple[int, int, int] | None = None,
) -> TiltSeries:
    """A Warp/WarpTools tilt-series XML as a TiltSeries with alignment and CTF per tilt."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise WarpFormatError(f"{path.name}: not a readable XML file ({error})") from error
    lists = {tag: _values(root, tag, path) for tag in _LISTS}
    if lists["Angles"] is None or lists["Dose"] is None:
        raise WarpFormatError(f"{path.name}: <Angles> and <Dose> are required in a Warp "
                              f"tilt-series XML")
    count = len(lists["Angles"])
    for tag, values in lists.items():
        if values is not None and len(values) != count:
            raise WarpFormatError(f"{path.name}: <{tag}> has {len(values)} values, expected "
                                  f"{count} (one per angle)")
    ctf = _params(root, "CTF")
    pixel = pixel_size_a or float(ctf.get("PixelSize", "0") or 0)
    if pixel <= 0:
        raise WarpFormatError(f"{path.name}: no <CTF> PixelSize; give the pixel size")
    use = _values(root, "UseTilt", path, kind=lambda w: w == "True") or [True] * count
    movies = (root.findtext("MoviePath") or "").split()
    table = {
        "angle": lists["Angles"], "dose": lists["Dose"],
        "axis": lists["AxisAngle"] or [0.0] * count,
        "offset_x": np.asarray(lists["AxisOffsetX"] or np.zeros(count))
        - (_grid(root, "GridMovementX", count) if root.find("GridMovementX") is not None
           else 0.0),
        "offset_y": np.asarray(lists["AxisOffsetY"] or np.zeros(count))
        - (_grid(root, "GridMovementY", count) if root.find("GridMovementY") is not None
           else 0.0),
        "movie": movies if len(movies) == count else [None] * count,
        "use": use,
    }
    ctfs = _warp_ctfs(root, ctf, count)
    acquisition = Acquisition(
        pixel_size_a=pixel, voltage_kv=float(ctf.get("Voltage", 300)),
        spherical_aberration_mm=float(ctf.get("Cs", 2.7)),
        amplitude_contrast=float(ctf.get("Amplitude", 0.07)))
    return _series(path.stem, table, ctfs, acquisition, image_size_xy, tomo_size_xyz)


def _warp_ctfs(root: ET.Element, ctf: dict[str, str], count: int) -> list[CtfTilt] | None:
    defocus = _grid(root, "GridCTF", count)
    if defocus is None:
        if "Defocus" not in ctf:
            return None
        defocus = np.full(count, float(ctf["Defocus"]))
    delta = _grid(root, "GridCTFDefocusDelta", count)
    delta = delta if delta is not None else np.full(count, float(ctf.get("DefocusDelta", 0)))
    angle = _grid(root, "GridCTFDefocusAngle", count)
    angle = angle if angle is not None else np.full(count, float(ctf.get("DefocusAngle", 0)))
    phase = _grid(root, "GridCTFPhase", count)
    phase = phase if phase is not None else np.full(count, float(ctf.get("PhaseShift", 0)))
    return [CtfTilt(defocus_u_a=(d + dd) * 1e4, defocus_v_a=(d - dd) * 1e4,
                    astigmatism_angle_deg=a, phase_shift_deg=p * 180.0)
            for d, dd, a, p in zip(defocus, delta, angle, phase, strict=True)]


def _series(name, table, ctfs, acquisition, image_size_xy, tomo_size_xyz) -> TiltSeries:
    dose = np.asarray(table["dose"], dtype=float)
    ranks = np.argsort(np.argsort(dose, kind="stable"), kind="stable")
    steps = np.diff(np.sort(dose))
    steps = steps[steps > 1e-6]
    tilts = []
    for i in range(len(dose)):
        alignment = warp_to_alignment(table["angle"][i], table["axis"][i],
                                      (table["offset_x"][i], table["offset_y"][i]),
                                      acquisition.pixel_size_a, tomo_size_xyz, image_size_xy)
        tilts.append(TiltImage(
            tilt_deg=alignment.y_tilt_deg, acquisition_order=int(ranks[i]),
            pre_exposure_e_a2=max(0.0, float(dose[i])), movie_path=table["movie"][i],
            excluded=not table["use"][i], alignment=alignment,
            ctf=ctfs[i] if ctfs else None))
    acquisition = acquisition.model_copy(update={
        "dose_per_tilt_e_a2": float(np.median(steps)) if len(steps) else 0.0,
        "tilt_axis_deg": float(np.mean(table["axis"]))})
    return TiltSeries(name=name, acquisition=acquisition,
                      image_size_xy=tuple(image_size_xy) if image_size_xy else (0, 0),
                      tilts=tilts)


def _warp_rows(series: TiltSeries, tomo_size_xyz) -> list[tuple[float, float, float, float]]:
    size = series.image_size_xy if all(series.image_size_xy) else None
    rows = []
    for tilt in series.tilts:
        alignment = tilt.alignment or TiltAlignment(
            y_tilt_deg=tilt.tilt_deg, z_rot_deg=series.acquisition.tilt_axis_deg)
        rows.append(alignment_to_warp(alignment, series.pixel_size_a, tomo_size_xyz, size))
    return rows


def write_warp_xml(path: str | Path, series: TiltSeries, tomo_size_xyz=None) -> None:
    """Write a WarpTools tilt-series XML with angles, dose, axis, offsets and per-tilt CTF."""
    rows = _warp_rows(series, tomo_size_xyz)
    root = ET.Element("TiltSeries", {"AreAnglesInverted": "False", "UnselectFilter": "False",
                                     "UnselectManual": "", "MagnificationCorrection": "1, 0, 0, 1"})
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    for tag, values in zip(("Angles", "AxisAngle", "AxisOffsetX", "AxisOffsetY"), columns,
                           strict=True):
        ET.SubElement(root, tag).text = "\n".join(f"{v:.7g}" for v in values)
    ET.SubElement(root, "Dose").text = "\n".join(f"{t.pre_exposure_e_a2:.7g}" for t in series.tilts)
    ET.SubElement(root, "UseTilt").text = "\n".join(str(not t.excluded) for t in series.tilts)
    if all(t.movie_path for t in series.tilts):
        ET.SubElement(root, "MoviePath").text = "\n".join(t.movie_path for t in series.tilts)
    acq = series.acquisition
    ctf = ET.SubElement(root, "CTF")
    for name, value in (("PixelSize", acq.pixel_size_a), ("Voltage", acq.voltage_kv),
                        ("Cs", acq.spherical_aberration_mm), ("Amplitude", acq.amplitude_contrast)):
        ET.SubElement(ctf, "Param", {"Name": name, "Value": f"{value:.7g}"})
    if all(t.ctf is not None for t in series.tilts):
        count = len(series.tilts)
        grids = {
            "GridCTF": [(t.ctf.defocus_u_a + t.ctf.defocus_v_a) / 2e4 for t in series.tilts],
            "GridCTFDefocusDelta": [(t.ctf.defocus_u_a - t.ctf.defocus_v_a) / 2e4
                                    for t in series.tilts],
            "GridCTFDefocusAngle": [t.ctf.astigmatism_angle_deg for t in series.tilts],
            "GridCTFPhase": [t.ctf.phase_shift_deg / 180.0 for t in series.tilts],
        }
        for tag, values in grids.items():
            grid = ET.SubElement(root, tag, {"Width": "1", "Height": "1", "Depth": str(count)})
            for z, value in enumerate(values):
                ET.SubElement(grid, "Node", {"X": "0", "Y": "0", "Z": str(z),
                                             "Value": f"{value:.9g}"})
        ET.SubElement(ctf, "Param", {"Name": "Defocus", "Value": f"{np.mean(grids['GridCTF']):.7g}"})
    ET.indent(root)
    _write(Path(path), ET.tostring(root, encoding="unicode", xml_declaration=True))


def read_tomostar(
    path: str | Path, pixel_size_a: float, image_size_xy: tuple[int, int] | None = None,
    tomo_size_xyz: tuple[int, int, int] | None = None, acquisition: Acquisition | None = None,
) -> TiltSeries:
    """A .tomostar (one row per tilt movie) as a TiltSeries; it carries no CTF."""
    path = Path(path)
    table = star_table(path)
    require_columns(table, ("wrpMovieName", "wrpAngleTilt", "wrpDose"), path, "",
                    "Warp's movies, tilt angles and doses")
    number = {c: numeric_column(table, c, path, "").to_numpy() for c in TOMOSTAR_COLUMNS[1:]
              if c in table.columns}
    count = len(table)
    rows = {"angle": number["wrpAngleTilt"], "dose": number["wrpDose"],
            "axis": number.get("wrpAxisAngle", np.zeros(count)),
            "offset_x": number.get("wrpAxisOffsetX", np.zeros(count)),
            "offset_y": number.get("wrpAxisOffsetY", np.zeros(count)),
            "movie": table["wrpMovieName"].astype(str).tolist(), "use": [True] * count}
    acquisition = acquisition or Acquisition(pixel_size_a=pixel_size_a)
    return _series(path.stem, rows, None, acquisition, image_size_xy, tomo_size_xyz)


def write_tomostar(path: str | Path, series: TiltSeries, tomo_size_xyz=None) -> None:
    rows = _warp_rows(series, tomo_size_xyz)
    table = pd.DataFrame({
        "wrpMovieName": [t.movie_path or f"{series.name}_{i:03d}.mrc"
                         for i, t in enumerate(series.tilts)],
        "wrpAngleTilt": [r[0] for r in rows], "wrpAxisAngle": [r[1] for r in rows],
        "wrpDose": [t.pre_exposure_e_a2 for t in series.tilts],
        "wrpAxisOffsetX": [r[2] for r in rows], "wrpAxisOffsetY": [r[3] for r in rows]})
    write_star_blocks(path, {"": table})


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_warp_particles(
    path: str | Path, particles: Sequence, coordinate_pixel_a: float,
    tomo_size_xyz: Sequence[int], tomo_pixel_a: float,
) -> None:
    """Particles for WarpTools (RELION-3-style STAR, rlnMicrographName = <tomogram>.tomostar).

    Warp places voxel i of any binning at ``i × pixel`` Å from the volume corner, so a particle's
    coordinate is ``(position_a + (N // 2) × tomo_pixel_a) / coordinate_pixel_a`` with N the
    tomogram size at ``tomo_pixel_a`` (its physical frame), whatever the binning of the output.
    """
    from tomoweave.formats.relion_particles import _angle_columns

    centre = np.asarray(tomo_size_xyz, dtype=int) // 2 * tomo_pixel_a
    coords = (np.array([p.position_a for p in particles]).reshape(-1, 3) + centre)
    coords /= coordinate_pixel_a
    table = {"rlnMicrographName": [f"{p.tomogram}.tomostar" for p in particles],
             "rlnCoordinateX": coords[:, 0], "rlnCoordinateY": coords[:, 1],
             "rlnCoordinateZ": coords[:, 2]}
    table.update(_angle_columns(particles))
    write_star_blocks(path, {"": pd.DataFrame(table)})


def read_warp_particles(
    path: str | Path, coordinate_pixel_a: float, tomo_size_xyz: Sequence[int],
    tomo_pixel_a: float,
) -> list:
    """Particles of a WarpTools particle STAR (inverse of ``write_warp_particles``)."""
    from tomoweave.formats.relion_particles import ANGLES
    from tomoweave.geometry import relion_zyz_to_matrix
    from tomoweave.model import Particle

    path = Path(path)
    table = star_table(path)
    require_columns(table, ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
                            "rlnCoordinateZ"), path, "", "Warp particle positions")
    coords = np.stack([numeric_column(table, f"rlnCoordinate{a}", path, "") for a in "XYZ"], 1)
    centre = np.asarray(tomo_size_xyz, dtype=int) // 2 * tomo_pixel_a
    positions = coords * coordinate_pixel_a - centre
    has_angles = all(c in table.columns for c in ANGLES)
    particles = []
    for i, name in enumerate(table["rlnMicrographName"].astype(str)):
        tomogram = Path(name).name.removesuffix(".tomostar")
        rotation = (relion_zyz_to_matrix(*(float(table[c].iloc[i]) for c in ANGLES))
                    if has_angles else np.eye(3))
        particles.append(Particle(name=f"{tomogram}/{i + 1}", tomogram=tomogram,
                                  position_a=tuple(float(v) for v in positions[i]),
                                  rotation=rotation.tolist()))
    return particles
