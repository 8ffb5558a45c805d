"""SerialEM .mdoc files (tilt series ``[ZValue = n]`` and frame sets ``[FrameSet = n]``).

Values are parsed by the ``mdocfile`` package; this module adds line-numbered validation (so a
truncated or edited file fails with the file, section and line named), the tilt-axis angle from the
``[T = ... Tilt axis angle = 85.3, binning = 4 ...]`` title, and parsed ``DateTime`` stamps.

Units are kept as SerialEM writes them except where the name says otherwise: ``defocus_um`` and
``target_defocus_um`` are µm as written (SerialEM's ``Defocus`` is negative for underfocus; its
``TargetDefocus`` likewise), pixel sizes are Å, doses e/Å².
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PureWindowsPath

from mdocfile.data_models import MdocGlobalData, MdocSectionData
from pydantic import ValidationError

_SECTION_RE = re.compile(r"^\[\s*(ZValue|FrameSet|MontSection)\s*=\s*(-?\d+)\s*\]$")
_TILT_AXIS_RE = re.compile(r"Tilt\s*axis\s*angle\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")
_BINNING_RE = re.compile(r"binning\s*=\s*([-+]?\d+(?:\.\d*)?)")
_DATE_FORMATS = ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S")
# Keys that SerialEM writes without a "= value" part in some versions.
_BARE_KEYS_OK = ("[T =",)


class MdocError(ValueError):
    """A malformed or truncated .mdoc file; the message names the file, section/line and problem."""


@dataclass
class MdocSection:
    """One ``[ZValue = n]`` (tilt) or ``[FrameSet = n]`` (movie) section."""

    z_value: int
    line_number: int
    tilt_deg: float | None = None
    exposure_dose_e_a2: float | None = None
    pixel_size_a: float | None = None
    defocus_um: float | None = None
    target_defocus_um: float | None = None
    sub_frame_path: str | None = None
    num_sub_frames: int | None = None
    date_time: datetime | None = None
    frame_doses_and_number: list[tuple[float, int]] | None = None
    stage_position_um: tuple[float, float] | None = None
    stage_z_um: float | None = None
    image_shift: tuple[float, float] | None = None
    magnification: float | None = None
    intensity: float | None = None
    rotation_angle_deg: float | None = None
    exposure_time_s: float | None = None
    binning: float | None = None
    dose_rate: float | None = None
    min_max_mean: tuple[float, float, float] | None = None
    voltage_kv: float | None = None
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def sub_frame_name(self) -> str | None:
        """File name of ``SubFramePath`` whether it was written as a Windows or a POSIX path."""
        if not self.sub_frame_path:
            return None
        return PureWindowsPath(self.sub_frame_path).name


@dataclass
class MdocTiltSeries:
    """The content of one .mdoc: header values and its sections in file order."""

    path: str
    is_frame_set: bool
    sections: list[MdocSection]
    titles: list[str] = field(default_factory=list)
    pixel_size_a: float | None = None
    image_file: str | None = None
    image_size_xy: tuple[int, int] | None = None
    tilt_axis_deg: float | None = None
    binning: float | None = None
    voltage_kv: float | None = None
    data_mode: int | None = None
    header_raw: dict[str, str] = field(default_factory=dict)

    @property
    def tilt_angles_deg(self) -> list[float]:
        return [s.tilt_deg for s in self.sections]  # type: ignore[misc]

    def acquisition_order(self) -> list[int]:
        """Section indices sorted by DateTime (file order where times are missing or equal)."""
        stamps = [s.date_time for s in self.sections]
        if any(stamp is None for stamp in stamps):
            return list(range(len(self.sections)))
        return sorted(range(len(self.sections)), key=lambda i: (stamps[i], i))


def parse_serialem_datetime(text: str) -> datetime:
    """Parse SerialEM's ``DateTime`` (``30-Nov-15  15:21:38``) into a datetime."""
    normalised = " ".join(text.split())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(normalised, fmt)
        except ValueError:
            continue
    raise ValueError(f"expected a date like '30-Nov-15  15:21:38', got {text!r}")


def read_mdoc(path: str | Path) -> MdocTiltSeries:
    """Read a SerialEM .mdoc (tilt series or frame set).

    Raises
    ------
    MdocError
        When the file cannot be read, has no section, has a line that is not ``Key = value``,
        a value that does not parse, a tilt section without ``TiltAngle``, duplicate section
        numbers, or a last section that lacks fields every other section has (truncated file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise MdocError(f"{path.name}: cannot read: {error.strerror}") from error
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _SECTION_RE.match(line.strip())]
    if not starts:
        raise MdocError(f"{path.name}: no [ZValue = n] or [FrameSet = n] section; not an .mdoc?")
    header = _parse_header(path, lines[: starts[0]])
    kind = _SECTION_RE.match(lines[starts[0]].strip()).group(1)  # type: ignore[union-attr]
    bounds = list(zip(starts, starts[1:] + [len(lines)], strict=True))
    sections = [_parse_section(path, lines, start, end) for start, end in bounds]
    _check_sections(path, sections, kind)
    header.sections = sections
    header.is_frame_set = kind == "FrameSet"
    if header.pixel_size_a is None:
        header.pixel_size_a = next((s.pixel_size_a for s in sections if s.pixel_size_a), None)
    if header.voltage_kv is None:
        header.voltage_kv = next((s.voltage_kv for s in sections if s.voltage_kv), None)
    return header


def _key_values(path: Path, lines: list[str], first_line: int) -> dict[str, tuple[str, int]]:
    """``Key = value`` pairs with their 1-based line numbers; titles ``[T = ...]`` are skipped."""
    values: dict[str, tuple[str, int]] = {}
    for offset, raw in enumerate(lines):
        line = raw.strip()
        number = first_line + offset + 1
        if not line or line.startswith(_BARE_KEYS_OK) or _SECTION_RE.match(line):
            continue
        if "=" not in line:
            raise MdocError(f"{path.name}: line {number}: expected 'Key = value', got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if not key:
            raise MdocError(f"{path.name}: line {number}: expected 'Key = value', got {line!r}")
        values[key] = (value, number)
    return values


def _parse_header(path: Path, lines: list[str]) -> MdocTiltSeries:
    titles = [line.strip() for line in lines if line.strip().startswith("[T =")]
    pairs = _key_values(path, lines, 0)
    if "T" in pairs:  # frame-set mdocs write the title without brackets
        titles.append("T = " + pairs.pop("T")[0])
    data = {key: value for key, (value, _) in pairs.items()}
    try:
        parsed = MdocGlobalData(**data)
    except ValidationError as error:
        key = str(error.errors()[0]["loc"][0])
        number = pairs.get(key, ("", 0))[1]
        raise MdocError(
            f"{path.name}: line {number}: {key}: cannot parse {data.get(key)!r} "
            f"({error.errors()[0]['msg']})"
        ) from error
    series = MdocTiltSeries(path=str(path), is_frame_set=False, sections=[], titles=titles,
                            header_raw=data)
    series.pixel_size_a = parsed.PixelSpacing
    series.image_file = str(parsed.ImageFile) if parsed.ImageFile is not None else None
    series.image_size_xy = tuple(int(v) for v in parsed.ImageSize) if parsed.ImageSize else None
    series.voltage_kv = parsed.Voltage
    series.data_mode = parsed.DataMode
    for title in titles:
        axis = _TILT_AXIS_RE.search(title)
        if axis:
            series.tilt_axis_deg = float(axis.group(1))
            binning = _BINNING_RE.search(title)
            series.binning = float(binning.group(1)) if binning else None
    return series


def _parse_section(path: Path, lines: list[str], start: int, end: int) -> MdocSection:
    match = _SECTION_RE.match(lines[start].strip())
    kind, number = match.group(1), int(match.group(2))  # type: ignore[union-attr]
    where = f"{path.name}: [{kind} = {number}] (line {start + 1})"
    pairs = _key_values(path, lines[start + 1 : end], start + 1)
    data = {key: value for key, (value, _) in pairs.items()}
    if "FrameDosesAndNumber" in data:  # mdocfile's alias; done here to keep its log quiet
        data["FrameDosesAndNumbers"] = data.pop("FrameDosesAndNumber")
    data[kind] = str(number)
    logging.getLogger("mdocfile").setLevel(logging.ERROR)
    try:
        parsed = MdocSectionData(**data)
    except (ValidationError, ValueError, IndexError) as error:
        key, message = _first_error(error)
        line_no = pairs.get(key, pairs.get("FrameDosesAndNumber", ("", start + 1)))[1]
        raise MdocError(
            f"{where}: line {line_no}: {key}: cannot parse {data.get(key)!r} ({message})"
        ) from error
    section = MdocSection(z_value=number, line_number=start + 1, raw=data)
    _fill_section(section, parsed)
    if "DateTime" in data:
        try:
            section.date_time = parse_serialem_datetime(data["DateTime"])
        except ValueError as error:
            raise MdocError(f"{where}: line {pairs['DateTime'][1]}: DateTime: {error}") from error
    return section


def _first_error(error: Exception) -> tuple[str, str]:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return str(first["loc"][0]) if first["loc"] else "?", str(first["msg"])
    return "FrameDosesAndNumbers", str(error)


def _fill_section(section: MdocSection, parsed: MdocSectionData) -> None:
    section.tilt_deg = parsed.TiltAngle
    section.exposure_dose_e_a2 = parsed.ExposureDose
    section.pixel_size_a = parsed.PixelSpacing
    section.defocus_um = parsed.Defocus
    section.target_defocus_um = parsed.TargetDefocus
    section.sub_frame_path = str(parsed.SubFramePath) if parsed.SubFramePath else None
    if section.sub_frame_path is not None:  # keep the path exactly as written
        section.sub_frame_path = section.raw.get("SubFramePath", section.sub_frame_path)
    section.num_sub_frames = parsed.NumSubFrames
    if parsed.FrameDosesAndNumbers is not None:
        pairs = parsed.FrameDosesAndNumbers
        section.frame_doses_and_number = [(float(d), int(n)) for d, n in pairs]
    section.stage_position_um = parsed.StagePosition
    section.stage_z_um = parsed.StageZ
    section.image_shift = parsed.ImageShift
    section.magnification = parsed.Magnification
    section.intensity = parsed.Intensity
    section.rotation_angle_deg = parsed.RotationAngle
    section.exposure_time_s = parsed.ExposureTime
    section.binning = parsed.Binning
    section.dose_rate = parsed.DoseRate
    section.min_max_mean = parsed.MinMaxMean
    section.voltage_kv = parsed.Voltage


def _check_sections(path: Path, sections: list[MdocSection], kind: str) -> None:
    seen: dict[int, int] = {}
    for section in sections:
        where = f"{path.name}: [{kind} = {section.z_value}] (line {section.line_number})"
        if section.z_value in seen:
            raise MdocError(f"{where}: duplicate section, first at line {seen[section.z_value]}")
        seen[section.z_value] = section.line_number
        if kind == "ZValue" and section.tilt_deg is None:
            raise MdocError(f"{where}: TiltAngle missing")
    if len(sections) < 2:
        return
    # A file cut while SerialEM was writing ends in a section lacking fields all others have.
    common = set.intersection(*(set(s.raw) for s in sections[:-1]))
    missing = sorted(common - set(sections[-1].raw))
    if missing:
        last = sections[-1]
        raise MdocError(
            f"{path.name}: [{kind} = {last.z_value}] (line {last.line_number}): "
            f"{', '.join(missing)} missing (every other section has it); truncated file?"
        )


def write_mdoc(path: str | Path, mdoc: MdocTiltSeries) -> None:
    """Write an .mdoc from the values as read (``header_raw``, titles, each section's ``raw``),
    so that reading it again gives the same values; written atomically."""
    kind = "FrameSet" if mdoc.is_frame_set else "ZValue"
    lines = [f"{key} = {value}" for key, value in mdoc.header_raw.items()]
    for title in mdoc.titles:
        lines += ["", title if title.startswith("[") else title]
    for section in mdoc.sections:
        lines += ["", f"[{kind} = {section.z_value}]"]
        for key, value in section.raw.items():
            if key in ("ZValue", "FrameSet", "MontSection"):
                continue
            name = "FrameDosesAndNumber" if key == "FrameDosesAndNumbers" else key
            lines.append(f"{name} = {value}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(path)
