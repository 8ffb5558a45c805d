"""IMOD alignment files: .tlt/.rawtlt/.xtilt (one angle a line) and .xf (2D transforms).

An .xf line is ``A11 A12 A21 A22 DX DY``: a raw-image point (x, y), in pixels from the image
centre, goes to the aligned image at ``(A11 x + A12 y + DX, A21 x + A22 y + DY)``. The aligned
image shows the specimen with its tilt axis along Y, i.e. it is the projection ``Ry(tilt) @
Rx(xtilt) @ X``. Hence raw = M⁻¹ (aligned − d): the in-plane rotation of the projection model is
M⁻¹ and its shift is ``−M⁻¹ d`` (times the pixel size). See ``xf_to_alignments``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomoweave.model import TiltAlignment

_XF_COLUMNS = 6


class ImodFormatError(ValueError):
    """A malformed IMOD file; the message names the file, line and what was expected."""


def _numeric_rows(path: Path, columns: int | None, what: str) -> list[list[float]]:
    """Rows of whitespace-separated numbers; blank lines are skipped, others must parse."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise ImodFormatError(f"{Path(path).name}: cannot read: {error.strerror}") from error
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if columns is not None and len(fields) != columns:
            raise ImodFormatError(
                f"{Path(path).name}: line {number}: expected {columns} numbers ({what}), "
                f"got {len(fields)}: {line.strip()!r}"
            )
        try:
            rows.append([float(value) for value in fields])
        except ValueError as error:
            raise ImodFormatError(
                f"{Path(path).name}: line {number}: expected {what}, got {line.strip()!r}"
            ) from error
    if not rows:
        raise ImodFormatError(f"{Path(path).name}: empty file, expected {what}")
    return rows


def read_tilt_angles(path: str | Path) -> np.ndarray:
    """Angles in degrees from a .tlt, .rawtlt or .xtilt file (one number a line), shape (T,)."""
    rows = _numeric_rows(Path(path), 1, "one angle in degrees per line")
    return np.array([row[0] for row in rows], dtype=float)


def write_tilt_angles(path: str | Path, angles_deg: Sequence[float]) -> None:
    """Write angles in degrees one per line (IMOD reads any float format)."""
    text = "".join(f"{float(angle):.6f}\n" for angle in angles_deg)
    _write_text(Path(path), text)


def read_xf(path: str | Path) -> np.ndarray:
    """Transforms of an .xf file, shape (T, 2, 3): ``[[A11, A12, DX], [A21, A22, DY]]``."""
    rows = np.array(_numeric_rows(Path(path), _XF_COLUMNS, "A11 A12 A21 A22 DX DY"))
    transforms = np.zeros((len(rows), 2, 3))
    transforms[:, :, :2] = rows[:, :4].reshape(-1, 2, 2)
    transforms[:, :, 2] = rows[:, 4:]
    return transforms


def write_xf(path: str | Path, transforms: np.ndarray) -> None:
    """Write (T, 2, 3) transforms in IMOD's fixed layout (7 decimals matrix, 3 shifts)."""
    transforms = np.asarray(transforms, dtype=float)
    if transforms.ndim != 3 or transforms.shape[1:] != (2, 3):
        raise ValueError(f"transforms must have shape (T, 2, 3), got {transforms.shape}")
    lines = []
    for t in transforms:
        lines.append(
            f"{t[0, 0]:12.7f}{t[0, 1]:12.7f}{t[1, 0]:12.7f}{t[1, 1]:12.7f}"
            f"{t[0, 2]:12.3f}{t[1, 2]:12.3f}\n"
        )
    _write_text(Path(path), "".join(lines))


def xf_to_alignments(
    transforms: np.ndarray,
    tilt_angles_deg: Sequence[float],
    pixel_size_a: float,
    x_tilts_deg: Sequence[float] | None = None,
) -> list[TiltAlignment]:
    """IMOD transforms + tilt angles to per-tilt alignments of the projection model.

    The 2×2 part ``M`` of an .xf line maps the raw image to the aligned one, so the projection
    model's in-plane rotation is ``M⁻¹`` and its shift, which is applied after the rotation,
    is ``−M⁻¹ d`` (pixels -> Å with ``pixel_size_a``, the pixel size the .xf refers to). A
    scaling part of ``M`` (IMOD's magnification) becomes ``magnification = 1 / |det M|^½``.
    """
    transforms = np.asarray(transforms, dtype=float)
    angles = np.asarray(tilt_angles_deg, dtype=float)
    if len(angles) != len(transforms):
        raise ValueError(f"{len(transforms)} transforms but {len(angles)} tilt angles")
    x_tilts = np.zeros(len(angles)) if x_tilts_deg is None else np.asarray(x_tilts_deg, float)
    alignments = []
    for transform, tilt, x_tilt in zip(transforms, angles, x_tilts, strict=True):
        inverse = np.linalg.inv(transform[:, :2])
        scale = float(np.sqrt(abs(np.linalg.det(inverse))))
        shift = -inverse @ transform[:, 2] * pixel_size_a
        alignments.append(
            TiltAlignment(
                y_tilt_deg=float(tilt),
                x_tilt_deg=float(x_tilt),
                z_rot_deg=float(np.degrees(np.arctan2(inverse[1, 0], inverse[0, 0]))),
                shift_x_a=float(shift[0]),
                shift_y_a=float(shift[1]),
                magnification=scale,
            )
        )
    return alignments


def alignments_to_xf(alignments: Sequence[TiltAlignment], pixel_size_a: float) -> np.ndarray:
    """Per-tilt alignments to IMOD transforms (T, 2, 3), the inverse of ``xf_to_alignments``."""
    transforms = np.zeros((len(alignments), 2, 3))
    for index, alignment in enumerate(alignments):
        angle = np.radians(alignment.z_rot_deg)
        forward = alignment.magnification * np.array(
            [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        )
        matrix = np.linalg.inv(forward)
        shift = np.array([alignment.shift_x_a, alignment.shift_y_a]) / pixel_size_a
        transforms[index, :, :2] = matrix
        transforms[index, :, 2] = -matrix @ shift
    return transforms


def _write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
