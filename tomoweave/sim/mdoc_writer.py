"""SerialEM-style .mdoc files for simulated tilt series.

Laid out like a real SerialEM tilt-series mdoc (see ../shared/data/serialem/TS_01.mdoc): global
keys, two [T = ...] title lines (the second carries the tilt-axis angle), then one [ZValue = i]
section per slice of the stack. Our stacks are in acquisition order, as SerialEM writes them for
dose-symmetric series, so DateTime increases with ZValue. Defocus values follow SerialEM's sign
(negative = underfocus, µm). SubFramePath is a Windows path, as on a microscope PC; importers
find the frames by file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

SERIALEM_DATETIME_FORMAT = "%d-%b-%y  %H:%M:%S"
FRAME_DIR_WINDOWS = "D:\\DATA\\tomoweave_sim\\frames"
ACQUISITION_START = datetime(2015, 11, 30, 15, 21, 38)
SECONDS_PER_TILT = 61


@dataclass
class MdocTilt:
    tilt_deg: float
    dose_e_a2: float
    defocus_a: float
    target_defocus_a: float
    frame_file: str | None
    n_frames: int | None


def frame_file_name(series_name: str, acquisition_index: int, tilt_deg: float) -> str:
    """SerialEM's frame-file naming: NAME_000_0.0.mrc (acquisition number, nominal tilt)."""
    return f"{series_name}_{acquisition_index:03d}_{tilt_deg:.1f}.mrc"


def format_datetime(moment: datetime) -> str:
    """SerialEM's DateTime format, e.g. ``30-Nov-15  15:21:38``."""
    return moment.strftime(SERIALEM_DATETIME_FORMAT)


def mdoc_text(stack_name: str, image_size_xy: tuple[int, int], pixel_size_a: float,
              tilt_axis_deg: float, voltage_kv: float, tilts: list[MdocTilt]) -> str:
    """The text of a tilt-series mdoc; ``tilts`` are in stack (= acquisition) order."""
    lines = [
        f"PixelSpacing = {pixel_size_a:g}",
        f"Voltage = {voltage_kv:g}",
        f"ImageFile = {stack_name}",
        f"ImageSize = {image_size_xy[0]} {image_size_xy[1]}",
        "DataMode = 2",
        "",
        f"[T = SerialEM: Digitized on tomoweave simulator       "
        f"{format_datetime(ACQUISITION_START - timedelta(minutes=7))}    ]",
        "",
        f"[T =     Tilt axis angle = {tilt_axis_deg:g}, binning = 1  spot = 8  camera = 0]",
        "",
    ]
    for index, tilt in enumerate(tilts):
        moment = ACQUISITION_START + timedelta(seconds=SECONDS_PER_TILT * index)
        lines += [
            f"[ZValue = {index}]",
            f"TiltAngle = {tilt.tilt_deg:.4f}",
            "StagePosition = 0 0",
            "StageZ = 0",
            "Magnification = 33000",
            f"ExposureDose = {tilt.dose_e_a2:g}",
            f"PixelSpacing = {pixel_size_a:g}",
            "SpotSize = 8",
            f"Defocus = {-tilt.defocus_a / 1e4:.4f}",
            f"ExposureTime = {1.0:g}",
            "Binning = 1",
            f"TargetDefocus = {-tilt.target_defocus_a / 1e4:g}",
        ]
        if tilt.frame_file is not None:
            lines += [
                f"SubFramePath = {FRAME_DIR_WINDOWS}\\{tilt.frame_file}",
                f"NumSubFrames = {tilt.n_frames}",
                f"FrameDosesAndNumber = {tilt.dose_e_a2 / tilt.n_frames:g} {tilt.n_frames}",
            ]
        lines += [f"DateTime = {format_datetime(moment)}", ""]
    return "\n".join(lines)


def write_mdoc(path: str | Path, text: str) -> Path:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path
