"""IMOD command files (tilt.com, newst.com) and binary models (.fid/.mod via ``imodmodel``).

Command files: the parameters between ``$tilt -StandardInput`` (or ``$newstack``) and the next
``$`` line, one ``KEY value...`` a line (tab or space separated; ``#`` lines are comments).

Models: IMOD point coordinates are pixel indices (x, y, z) with the first voxel at 0. Particle
models are read on a tomogram in tomoweave's orientation (Z = beam, as after ``trimvol -rx``), so
positions are ``(index − N//2) × pixel size`` like every other corner-based format. Fiducial
models (.fid) hold per-bead contours of (x, y, view) points on the tilt images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imodmodel
import numpy as np
import pandas as pd

from tomoweave.formats.imod import ImodFormatError
from tomoweave.geometry import centered_a_to_pixels, pixels_to_centered_a
from tomoweave.model import Particle


def read_com_parameters(path: str | Path, program: str | None = None) -> dict[str, list[str]]:
    """Parameters of the ``$program -StandardInput`` block (the first block when not given)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise ImodFormatError(f"{path.name}: cannot read: {error.strerror}") from error
    params: dict[str, list[str]] = {}
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("$"):
            words = stripped[1:].split()
            is_block = "-StandardInput" in words or "-StandardInput" in stripped
            inside = is_block and (program is None or (words and words[0] == program))
            if params and not inside:
                break
            continue
        if inside and stripped and not stripped.startswith("#"):
            key, *values = stripped.replace("\t", " ").split()
            params[key] = " ".join(values).replace(",", " ").split()
    if not params:
        raise ImodFormatError(f"{path.name}: no '${program or 'program'} -StandardInput' block "
                              f"with parameters")
    return params


@dataclass
class TiltComParameters:
    """The parameters of IMOD's tilt that matter for geometry (pixels of the binned images)."""

    tilt_file: str | None = None
    xtilt_file: str | None = None
    thickness_px: int | None = None
    image_binned: float = 1.0
    full_image_xy: tuple[int, int] | None = None
    x_axis_tilt_deg: float = 0.0
    offset_deg: float = 0.0
    shift_xz_px: tuple[float, float] = (0.0, 0.0)
    other: dict[str, list[str]] = field(default_factory=dict)


def read_tilt_com(path: str | Path) -> TiltComParameters:
    params = read_com_parameters(path, "tilt")
    name = Path(path).name

    def number(key: str, index: int = 0, default: float = 0.0) -> float:
        values = params.get(key)
        if not values:
            return default
        try:
            return float(values[index])
        except (ValueError, IndexError) as error:
            raise ImodFormatError(f"{name}: {key}: expected a number, got {values}") from error

    full = params.get("FULLIMAGE")
    return TiltComParameters(
        tilt_file=(params.get("TILTFILE") or [None])[0],
        xtilt_file=(params.get("XTILTFILE") or [None])[0],
        thickness_px=int(number("THICKNESS")) if "THICKNESS" in params else None,
        image_binned=number("IMAGEBINNED", default=1.0),
        full_image_xy=(int(number("FULLIMAGE", 0)), int(number("FULLIMAGE", 1))) if full else None,
        x_axis_tilt_deg=number("XAXISTILT"), offset_deg=number("OFFSET"),
        shift_xz_px=(number("SHIFT", 0), number("SHIFT", 1)), other=params)


@dataclass
class NewstComParameters:
    transform_file: str | None = None
    bin_by: float = 1.0
    size_xy: tuple[int, int] | None = None
    offset_xy: tuple[float, float] = (0.0, 0.0)
    other: dict[str, list[str]] = field(default_factory=dict)


def read_newst_com(path: str | Path) -> NewstComParameters:
    params = read_com_parameters(path, "newstack")
    size = params.get("SizeToOutputInXandY")
    offset = params.get("OffsetsInXandY") or ["0", "0"]
    return NewstComParameters(
        transform_file=(params.get("TransformFile") or [None])[0],
        bin_by=float((params.get("BinByFactor") or ["1"])[0]),
        size_xy=(int(size[0]), int(size[1])) if size else None,
        offset_xy=(float(offset[0]), float(offset[1])), other=params)


def write_tilt_com(path: str | Path, stack: str, output: str, tilt_file: str,
                   thickness_px: int, full_image_xy: tuple[int, int], image_binned: float = 1.0,
                   xtilt_file: str | None = None) -> None:
    """A minimal tilt.com that reconstructs ``stack`` (aligned) with the given tilt angles."""
    lines = ["$setenv IMOD_OUTPUT_FORMAT MRC", "$tilt -StandardInput",
             f"InputProjections {stack}", f"OutputFile {output}",
             f"IMAGEBINNED {image_binned:g}", f"TILTFILE {tilt_file}"]
    if xtilt_file:
        lines.append(f"XTILTFILE {xtilt_file}")
    lines += [f"THICKNESS {thickness_px}", "RADIAL 0.35 0.035", "FalloffIsTrueSigma 1",
              "XAXISTILT 0.0", "PERPENDICULAR", "MODE 1",
              f"FULLIMAGE {full_image_xy[0]} {full_image_xy[1]}", "SUBSETSTART 0 0",
              "AdjustOrigin", "OFFSET 0.0", "SHIFT 0.0 0.0"]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_model_points(path: str | Path) -> pd.DataFrame:
    """All points of an IMOD model: columns object_id, contour_id, x, y, z (pixels)."""
    path = Path(path)
    try:
        return imodmodel.read(path).reset_index(drop=True)
    except Exception as error:  # imodmodel raises struct/value errors on bad files
        raise ImodFormatError(f"{path.name}: not a readable IMOD model ({error})") from error


def read_fiducials(path: str | Path) -> list[np.ndarray]:
    """Bead tracks of a .fid model: one (n, 3) array of (x, y, view) per contour."""
    points = read_model_points(path)
    return [group[["x", "y", "z"]].to_numpy(float)
            for _, group in points.groupby(["object_id", "contour_id"], sort=True)]


def read_imod_particles(
    path: str | Path, pixel_size_a: float, tomo_size_xyz: tuple[int, int, int], tomogram: str
) -> list[Particle]:
    """Points of a model picked on a tomogram as particles (identity orientation)."""
    points = read_model_points(path)
    xyz = points[["x", "y", "z"]].to_numpy(float)
    centred = pixels_to_centered_a(xyz, tomo_size_xyz, pixel_size_a).reshape(-1, 3)
    return [Particle(name=f"{tomogram}/{i + 1}", tomogram=tomogram,
                     position_a=tuple(float(v) for v in p),
                     class_id=int(points["object_id"].iloc[i]) + 1)
            for i, p in enumerate(centred)]


def write_imod_particles(
    path: str | Path, particles: Sequence[Particle], pixel_size_a: float,
    tomo_size_xyz: tuple[int, int, int],
) -> None:
    """Particle positions as a scattered-point model (one object per class)."""
    xyz = np.array([centered_a_to_pixels(p.position_a, tomo_size_xyz, pixel_size_a)
                    for p in particles]).reshape(-1, 3)
    frame = pd.DataFrame({"object_id": [max(0, (p.class_id or 1) - 1) for p in particles],
                          "contour_id": 0, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imodmodel.write(frame, path)
