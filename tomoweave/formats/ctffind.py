"""Per-tilt CTF files: CTFFIND4/5 diagnostic .txt (also AreTomo's _CTF.txt), IMOD ctfplotter
.defocus (versions 2 and 3), and plain one-value-a-line lists (defocus, dose).

Defocus is Å, positive for underfocus, at the tilt axis (as ``CtfTilt``). CTFFIND reports
defocus 1/2 in Å, the astigmatism azimuth in degrees and the phase shift in radians; ctfplotter
writes nm and, for astigmatism, the angle in degrees with phase shift in degrees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomoweave.model import CtfTilt

_CTFFIND_COLUMNS = ("micrograph", "defocus_1_a", "defocus_2_a", "azimuth_deg",
                    "phase_shift_rad", "cross_correlation", "fit_resolution_a")
_CTFFIND5_EXTRA = ("tilt_axis_deg", "tilt_deg", "thickness_a")


class CtfFormatError(ValueError):
    """A malformed CTF file; the message names the file, line and what was expected."""


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise CtfFormatError(f"{path.name}: cannot read: {error.strerror}") from error


def _floats(path: Path, number: int, line: str, minimum: int, what: str) -> list[float]:
    fields = line.split()
    if len(fields) < minimum:
        raise CtfFormatError(
            f"{path.name}: line {number}: expected at least {minimum} columns ({what}), "
            f"got {len(fields)}"
        )
    try:
        return [float(value) for value in fields]
    except ValueError as error:
        raise CtfFormatError(f"{path.name}: line {number}: expected numbers ({what}), "
                             f"got {line.strip()!r}") from error


def read_ctffind_txt(path: str | Path) -> list[CtfTilt]:
    """One ``CtfTilt`` per data line of a CTFFIND4/5 (or AreTomo _CTF.txt) output file."""
    path = Path(path)
    tilts = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        values = _floats(path, number, line, len(_CTFFIND_COLUMNS), " ".join(_CTFFIND_COLUMNS))
        tilts.append(
            CtfTilt(
                defocus_u_a=values[1],
                defocus_v_a=values[2],
                astigmatism_angle_deg=values[3],
                phase_shift_deg=math.degrees(values[4]),
                score=values[5],
                fit_resolution_a=values[6] if values[6] > 0 else None,
            )
        )
    if not tilts:
        raise CtfFormatError(f"{path.name}: no data lines (expected CTFFIND columns "
                             f"{' '.join(_CTFFIND_COLUMNS)})")
    return tilts


def write_ctffind_txt(path: str | Path, ctfs: Sequence[CtfTilt]) -> None:
    """Write CTFFIND4's .txt layout (phase shift in radians)."""
    lines = [
        "# Output from CTFFIND version 4.1.14 (written by tomoweave)",
        "# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; "
        "#4 - azimuth of astigmatism; #5 - additional phase shift [radians]; "
        "#6 - cross correlation; #7 - spacing (in Angstroms) up to which CTF rings were fit "
        "successfully",
    ]
    for index, ctf in enumerate(ctfs, start=1):
        lines.append(
            f"{index:d} {ctf.defocus_u_a:.6f} {ctf.defocus_v_a:.6f} "
            f"{ctf.astigmatism_angle_deg:.6f} {math.radians(ctf.phase_shift_deg):.8f} "
            f"{(ctf.score or 0.0):.8f} {(ctf.fit_resolution_a or 0.0):.6f}"
        )
    _write(Path(path), "\n".join(lines) + "\n")


@dataclass
class DefocusEntry:
    """One line of an IMOD .defocus file: a range of views (1-based, inclusive) and its CTF."""

    start_view: int
    end_view: int
    start_tilt_deg: float
    end_tilt_deg: float
    ctf: CtfTilt


def read_imod_defocus(path: str | Path) -> list[DefocusEntry]:
    """Read a ctfplotter .defocus file.

    Version 2: ``view1 view2 tilt1 tilt2 defocus_nm`` (the version after the first line's
    values). Version 3: a header line starting with the flags (1 astigmatism, 2 astigmatism angle
    in radians, 4 phase shift, 8 phase in radians, 16 inverted tilt angles, 32 cut-on frequency;
    as ctfphaseflip documents), then ``view1 view2 tilt1 tilt2 df1_nm df2_nm angle [phase]
    [cut-on]``. Like ctfphaseflip, a file is version 3 when its data lines have more than five
    columns or its first line is such a header.
    """
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(_lines(path), start=1) if line.strip()]
    if not lines:
        raise CtfFormatError(f"{path.name}: empty file, expected ctfplotter defocus lines")
    first = _floats(path, lines[0][0], lines[0][1], 1, "view1 view2 tilt1 tilt2 defocus")
    second_width = len(lines[1][1].split()) if len(lines) > 1 else 5
    header = (len(first) in (5, 6) and not any(first[1:-1]) and first[-1] >= 3) or (
        second_width > 5 and len(first) <= 6 and float(first[0]).is_integer())
    flags = int(first[0]) if header else 0
    if header:
        lines = lines[1:]
    entries = []
    for number, line in lines:
        values = _floats(path, number, line, 5, "view1 view2 tilt1 tilt2 defocus_nm")
        entries.append(DefocusEntry(int(values[0]), int(values[1]), values[2], values[3],
                                    _defocus_ctf(path, number, values, flags)))
    return entries


def _defocus_ctf(path: Path, number: int, values: list[float], flags: int) -> CtfTilt:
    defocus_u = values[4] * 10.0
    defocus_v, angle, phase = defocus_u, 0.0, 0.0
    if flags & 1:
        if len(values) < 7:
            raise CtfFormatError(f"{path.name}: line {number}: astigmatism flag set; expected "
                                 f"defocus1 defocus2 angle, got {len(values)} columns")
        defocus_v, angle = values[5] * 10.0, values[6]
        angle = math.degrees(angle) if flags & 2 else angle
    if flags & 4:
        column = 7 if flags & 1 else 5
        if len(values) <= column:
            raise CtfFormatError(f"{path.name}: line {number}: phase-shift flag set; expected "
                                 f"column {column + 1}, got {len(values)} columns")
        phase = math.degrees(values[column]) if flags & 8 else values[column]
    return CtfTilt(defocus_u_a=defocus_u, defocus_v_a=defocus_v, astigmatism_angle_deg=angle,
                   phase_shift_deg=phase)


def defocus_entries_per_view(entries: Sequence[DefocusEntry], view_count: int) -> list[CtfTilt]:
    """Expand view ranges to one ``CtfTilt`` per view (0-based list of ``view_count``)."""
    ctfs: list[CtfTilt | None] = [None] * view_count
    for entry in entries:
        for view in range(entry.start_view, entry.end_view + 1):
            if 1 <= view <= view_count:
                ctfs[view - 1] = entry.ctf
    missing = [i + 1 for i, ctf in enumerate(ctfs) if ctf is None]
    if missing:
        raise CtfFormatError(f"no defocus for view(s) {missing[:10]} of {view_count}")
    return ctfs  # type: ignore[return-value]


def write_imod_defocus(
    path: str | Path, ctfs: Sequence[CtfTilt], tilt_angles_deg: Sequence[float]
) -> None:
    """Write a version-3 .defocus with astigmatism and phase shift (flags 1 + 4), one view a line."""
    lines = ["5 0 0 0.0 0.0 3"]
    for view, (ctf, tilt) in enumerate(zip(ctfs, tilt_angles_deg, strict=True), start=1):
        lines.append(
            f"{view}\t{view}\t{tilt:.2f}\t{tilt:.2f}\t{ctf.defocus_u_a / 10:.3f}\t"
            f"{ctf.defocus_v_a / 10:.3f}\t{ctf.astigmatism_angle_deg:.2f}\t"
            f"{ctf.phase_shift_deg:.4f}"
        )
    _write(Path(path), "\n".join(lines) + "\n")


def read_value_list(path: str | Path, what: str = "one number per line") -> np.ndarray:
    """A plain list of numbers, one a line (e.g. defocus in nm, accumulated dose in e/Å²)."""
    path = Path(path)
    values = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        values.append(_floats(path, number, line, 1, what)[0])
    if not values:
        raise CtfFormatError(f"{path.name}: empty file, expected {what}")
    return np.array(values)


def write_value_list(path: str | Path, values: Sequence[float]) -> None:
    _write(Path(path), "".join(f"{float(v):.6f}\n" for v in values))


_CTFFIND5_HEADER = re.compile(r"#8\s*-\s*Estimated tilt axis angle", re.IGNORECASE)


def is_ctffind5(path: str | Path) -> bool:
    """True when the header announces CTFFIND5's tilt/thickness columns."""
    return any(_CTFFIND5_HEADER.search(line) for line in _lines(Path(path))[:10])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
