"""AreTomo output: .aln alignment (global, dark frames, local patches) and TiltSeries_Metrics.csv.

An .aln global row is ``SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT`` in pixels of the input
stack. AreTomo's own IMOD export (``-OutImod``) writes for each row the .xf line
``M = R(ROT)``, ``d = −M (TX, TY)``; with the .xf rule of ``formats.imod`` (rotation M⁻¹, shift
−M⁻¹d) that is ``z_rot_deg = −ROT`` and ``shift = (TX, TY) × pixel size``: the shift is applied
after the in-plane rotation, exactly as in the projection model. ``TILT`` already includes the
alpha offset (AreTomo writes the same numbers to its .tlt). ``GMAG`` scales the raw image onto the
aligned one like an .xf matrix, hence ``magnification = 1 / GMAG``. The _CTF.txt file has the
CTFFIND layout and is read by ``formats.ctffind``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from alnfile.data_model import (
    AlnData,
    DarkFrameInfo,
    PatchAlignmentParameters,
    TiltImageAlignmentParameters,
)

from tomoweave.model import TiltAlignment

GLOBAL_COLUMNS = ("sec", "rot", "gmag", "tx", "ty", "smean", "sfit", "scale", "base", "tilt")
LOCAL_COLUMNS = ("sec_idx", "patch_idx", "center_x", "center_y", "shift_x", "shift_y", "reliable")


class AlnError(ValueError):
    """A malformed AreTomo file; the message names the file, line and what was expected."""


@dataclass
class AlnFile:
    """The content of an AreTomo .aln file."""

    path: str
    raw_size_xyz: tuple[int, int, int]
    global_rows: np.ndarray  # (T, 10) in GLOBAL_COLUMNS order
    dark_frames: list[tuple[int, int, float]] = field(default_factory=list)  # raw index, ?, tilt
    num_patches: int = 0
    local_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    alpha_offset_deg: float = 0.0
    beta_offset_deg: float = 0.0
    thickness_px: int | None = None
    first_row_line: int = 0

    @property
    def tilt_angles_deg(self) -> np.ndarray:
        return self.global_rows[:, GLOBAL_COLUMNS.index("tilt")]

    def column(self, name: str) -> np.ndarray:
        return self.global_rows[:, GLOBAL_COLUMNS.index(name)]


def read_aln(path: str | Path) -> AlnFile:
    """Read an AreTomo .aln file; every row is checked for its number of numeric columns."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise AlnError(f"{path.name}: cannot read: {error.strerror}") from error
    header: dict[str, str] = {}
    dark: list[tuple[int, int, float]] = []
    rows: dict[str, list[list[float]]] = {"global": [], "local": []}
    section, first_row_line = "", 0
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            section = _header_line(path, number, line, header, dark) or section
            continue
        if not section:
            raise AlnError(f"{path.name}: line {number}: data before the '# SEC ...' header")
        expected = len(GLOBAL_COLUMNS) if section == "global" else len(LOCAL_COLUMNS)
        values = _numbers(path, number, line, expected, section)
        if section == "global" and not rows["global"]:
            first_row_line = number
        rows[section].append(values)
    if not rows["global"]:
        raise AlnError(f"{path.name}: no global alignment rows after '# SEC ROT GMAG ...'")
    raw_size = tuple(int(v) for v in header.get("RawSize", "0 0 0").split())
    if len(raw_size) != 3:
        raise AlnError(f"{path.name}: RawSize: expected 3 integers, got {header['RawSize']!r}")
    return AlnFile(
        path=str(path),
        raw_size_xyz=raw_size,  # type: ignore[arg-type]
        global_rows=np.array(rows["global"], dtype=float),
        dark_frames=dark,
        num_patches=int(header.get("NumPatches", "0")),
        local_rows=np.array(rows["local"], dtype=float).reshape(-1, len(LOCAL_COLUMNS)),
        alpha_offset_deg=float(header.get("AlphaOffset", "0")),
        beta_offset_deg=float(header.get("BetaOffset", "0")),
        thickness_px=int(float(header["Thickness"])) if "Thickness" in header else None,
        first_row_line=first_row_line,
    )


def _header_line(
    path: Path, number: int, line: str, header: dict[str, str], dark: list
) -> str | None:
    """Parse one '#' line; returns the section it opens, if any."""
    body = line.lstrip("#").strip()
    if body.startswith("SEC"):
        return "global"
    if body.startswith("Local Alignment"):
        return "local"
    if "=" not in body:
        return None
    key, value = (part.strip() for part in body.split("=", 1))
    if key == "DarkFrame":
        parts = value.split()
        try:
            dark.append((int(parts[0]), int(parts[1]), float(parts[2])))
        except (ValueError, IndexError) as error:
            raise AlnError(
                f"{path.name}: line {number}: DarkFrame: expected 'index index tilt', "
                f"got {value!r}"
            ) from error
    else:
        header[key] = value
    return None


def _numbers(path: Path, number: int, line: str, expected: int, section: str) -> list[float]:
    fields = line.split()
    names = GLOBAL_COLUMNS if section == "global" else LOCAL_COLUMNS
    if len(fields) != expected:
        raise AlnError(
            f"{path.name}: line {number}: expected {expected} columns "
            f"({' '.join(names)}), got {len(fields)}"
        )
    try:
        return [float(value) for value in fields]
    except ValueError as error:
        raise AlnError(
            f"{path.name}: line {number}: expected numbers ({' '.join(names)}), got {line!r}"
        ) from error


def check_tilt_count(aln: AlnFile, tilt_count: int, source: str = "the tilt series") -> None:
    """Raise when the .aln has fewer alignment rows than the series has (non-dark) tilts."""
    rows = len(aln.global_rows)
    if rows < tilt_count:
        last = aln.first_row_line + rows - 1
        raise AlnError(
            f"{Path(aln.path).name}: lines {aln.first_row_line}-{last}: {rows} alignment rows, "
            f"but {source} has {tilt_count} tilts; expected one row per tilt"
        )


def aln_to_alignments(aln: AlnFile, pixel_size_a: float) -> list[TiltAlignment]:
    """Per-tilt alignments of the rows of an .aln, in row order (dark frames are not in it)."""
    alignments = []
    for row in aln.global_rows:
        values = dict(zip(GLOBAL_COLUMNS, row, strict=True))
        gmag = values["gmag"] if values["gmag"] > 0 else 1.0
        alignments.append(
            TiltAlignment(
                y_tilt_deg=float(values["tilt"]),
                x_tilt_deg=0.0,
                z_rot_deg=float(-values["rot"]),
                shift_x_a=float(values["tx"] * pixel_size_a),
                shift_y_a=float(values["ty"] * pixel_size_a),
                magnification=float(1.0 / gmag),
            )
        )
    return alignments


def alignments_to_aln(
    alignments: Sequence[TiltAlignment],
    pixel_size_a: float,
    raw_size_xyz: tuple[int, int, int],
    dark_frames: Sequence[tuple[int, int, float]] = (),
) -> AlnFile:
    """An AlnFile from per-tilt alignments (the inverse of ``aln_to_alignments``)."""
    rows = [
        [index + 1, -a.z_rot_deg, 1.0 / a.magnification, a.shift_x_a / pixel_size_a,
         a.shift_y_a / pixel_size_a, 1.0, 1.0, 1.0, 0.0, a.y_tilt_deg]
        for index, a in enumerate(alignments)
    ]
    return AlnFile(path="", raw_size_xyz=tuple(raw_size_xyz), global_rows=np.array(rows),
                   dark_frames=list(dark_frames))


def write_aln(path: str | Path, aln: AlnFile) -> None:
    """Write an .aln with alnfile's layout (AreTomo reads it back with -AlnFile)."""
    data = AlnData(
        RawSize=aln.raw_size_xyz,
        NumPatches=aln.num_patches,
        DarkFrames=[DarkFrameInfo(section_idx=i, val2=j, angle=t) for i, j, t in aln.dark_frames],
        AlphaOffset=aln.alpha_offset_deg,
        BetaOffset=aln.beta_offset_deg,
        GlobalAlignments=[
            TiltImageAlignmentParameters(**dict(zip(GLOBAL_COLUMNS, _typed_row(row), strict=True)))
            for row in aln.global_rows
        ],
        LocalAlignments=[
            PatchAlignmentParameters(
                sec_idx=int(r[0]), patch_idx=int(r[1]), center_x=r[2], center_y=r[3],
                shift_x=r[4], shift_y=r[5], is_reliable=r[6],
            )
            for r in aln.local_rows
        ],
    )
    # alnfile rounds shifts to 3 decimals and angles to 2 like AreTomo; keep full precision
    text = _full_precision(data)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(out)


def _typed_row(row: np.ndarray) -> list:
    return [int(row[0])] + [float(v) for v in row[1:]]


def _full_precision(data: AlnData) -> str:
    lines = [data.header, f"# RawSize = {' '.join(str(v) for v in data.RawSize)}",
             f"# NumPatches = {data.NumPatches}"]
    lines += [frame.to_aln_string() for frame in data.DarkFrames]
    lines += [f"# AlphaOffset = {data.AlphaOffset:8.2f}", f"# BetaOffset = {data.BetaOffset:8.2f}",
              "# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE"
              "     TILT"]
    for g in data.GlobalAlignments:
        lines.append(
            f"{g.sec:5d} {g.rot:11.5f} {g.gmag:10.6f} {g.tx:11.5f} {g.ty:11.5f} {g.smean:8.2f} "
            f"{g.sfit:8.2f} {g.scale:8.2f} {g.base:8.2f} {g.tilt:10.5f}"
        )
    if data.LocalAlignments:
        lines.append("# Local Alignment")
        for p in data.LocalAlignments:
            lines.append(
                f"{p.sec_idx:4d} {p.patch_idx:3d} {p.center_x:9.2f} {p.center_y:9.2f} "
                f"{p.shift_x:9.2f} {p.shift_y:9.2f} {p.is_reliable:5.1f}"
            )
    return "\n".join(lines) + "\n"


@dataclass
class AreTomoMetrics:
    """One row of AreTomo3's TiltSeries_Metrics.csv."""

    tilt_series: str
    thickness_px: float
    tilt_axis_deg: float
    global_shift_px: float
    bad_patch_low: float
    bad_patch_all: float
    ctf_resolution_a: float
    ctf_score: float
    pixel_size_a: float


_METRIC_COLUMNS = {
    "Tilt_Series": "tilt_series", "Thickness(Pix)": "thickness_px", "Tilt_Axis": "tilt_axis_deg",
    "Global_Shift(Pix)": "global_shift_px", "Bad_Patch_Low": "bad_patch_low",
    "Bad_Patch_All": "bad_patch_all", "CTF_Res(A)": "ctf_resolution_a",
    "CTF_Score": "ctf_score", "Pix_Size(A)": "pixel_size_a",
}


def read_aretomo_metrics(path: str | Path) -> list[AreTomoMetrics]:
    """Rows of TiltSeries_Metrics.csv; a missing column or a non-number names line and column."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in _METRIC_COLUMNS if name not in header]
        if missing:
            raise AlnError(f"{path.name}: line 1: missing column(s) {', '.join(missing)}")
        rows = []
        for number, fields in enumerate(reader, start=2):
            if not any(field.strip() for field in fields):
                continue
            values = dict(zip(header, (field.strip() for field in fields), strict=False))
            record = {}
            for column, name in _METRIC_COLUMNS.items():
                text = values.get(column, "")
                try:
                    record[name] = text if name == "tilt_series" else float(text)
                except ValueError as error:
                    raise AlnError(
                        f"{path.name}: line {number}: column {column}: expected a number, "
                        f"got {text!r}"
                    ) from error
            rows.append(AreTomoMetrics(**record))
    return rows
