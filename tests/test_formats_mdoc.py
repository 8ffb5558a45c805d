"""SerialEM .mdoc reader against the real sample files, and its errors on damaged files."""

from datetime import datetime
from pathlib import Path

import pytest

from tomoweave.formats.mdoc import MdocError, parse_serialem_datetime, read_mdoc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "serialem"
TS_01 = DATA / "TS_01.mdoc"


def test_tilt_series_mdoc_header_and_sections():
    mdoc = read_mdoc(TS_01)
    assert not mdoc.is_frame_set
    assert mdoc.pixel_size_a == pytest.approx(5.4)
    assert mdoc.image_file == "TS_01.mrc"
    assert mdoc.image_size_xy == (924, 958)
    assert mdoc.tilt_axis_deg == pytest.approx(85.3)
    assert mdoc.binning == pytest.approx(4.0)
    assert len(mdoc.sections) == 41
    first, last = mdoc.sections[0], mdoc.sections[-1]
    assert first.z_value == 0 and last.z_value == 40
    assert first.tilt_deg == pytest.approx(0.000999877)
    assert mdoc.sections[1].tilt_deg == pytest.approx(3.00113)
    assert mdoc.sections[2].tilt_deg == pytest.approx(-2.99863)
    assert last.tilt_deg == pytest.approx(60.0006)
    assert first.defocus_um == pytest.approx(2.68083)
    assert last.defocus_um == pytest.approx(-0.567786)
    assert first.target_defocus_um == pytest.approx(-4.0)
    assert first.exposure_dose_e_a2 == 0.0
    assert first.num_sub_frames == 8
    assert first.sub_frame_path == r"D:\DATA\Flo\HGK149_20151130\frames\TS_01_000_0.0.mrc"
    assert first.sub_frame_name == "TS_01_000_0.0.mrc"
    assert first.date_time == datetime(2015, 11, 30, 15, 21, 38)
    assert last.date_time == datetime(2015, 11, 30, 16, 6, 45)
    assert first.image_shift == pytest.approx((-0.0108126, -0.121079))
    assert first.rotation_angle_deg == pytest.approx(175.3)


def test_acquisition_order_follows_datetime():
    mdoc = read_mdoc(TS_01)
    order = mdoc.acquisition_order()
    stamps = [mdoc.sections[i].date_time for i in order]
    assert stamps == sorted(stamps)
    assert order[0] == 0 and sorted(order) == list(range(41))


def test_frame_set_mdoc():
    mdoc = read_mdoc(DATA / "frame_set_single.mdoc")
    assert mdoc.is_frame_set
    assert mdoc.voltage_kv == pytest.approx(300.0)
    assert mdoc.pixel_size_a == pytest.approx(1.2827)  # from the section: no global PixelSpacing
    (section,) = mdoc.sections
    assert section.tilt_deg == pytest.approx(32.984)
    assert section.exposure_dose_e_a2 == pytest.approx(7.65892)
    assert section.dose_rate == pytest.approx(4.97858)
    assert section.frame_doses_and_number == [(pytest.approx(0.63824), 12)]
    assert section.num_sub_frames == 12
    assert section.sub_frame_name == "s_mmm_00993_33.0_Oct08_07.39.05.tif"
    assert section.date_time == datetime(2021, 10, 8, 7, 39, 8)
    assert section.binning == pytest.approx(0.5)


def test_datetime_formats():
    assert parse_serialem_datetime("30-Nov-15  15:21:38") == datetime(2015, 11, 30, 15, 21, 38)
    assert parse_serialem_datetime("08-Oct-2021 07:39:08") == datetime(2021, 10, 8, 7, 39, 8)
    with pytest.raises(ValueError, match="30-Nov-15"):
        parse_serialem_datetime("yesterday")


def _damaged(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "TS_01.mdoc"
    path.write_text(text)
    return path


def test_truncated_mdoc_names_section_and_missing_fields(tmp_path):
    text = TS_01.read_text()
    cut = text[: text.index("DateTime = 30-Nov-15  16:06:45")]  # file cut before the last line
    with pytest.raises(MdocError, match=r"TS_01.mdoc: \[ZValue = 40\].*DateTime missing"):
        read_mdoc(_damaged(tmp_path, cut))


def test_truncated_mid_line_names_line(tmp_path):
    text = TS_01.read_text()
    cut = text[: text.index("TiltAngle = 60.0006") + len("TiltAng")]
    with pytest.raises(MdocError, match=r"TS_01.mdoc: line \d+: expected 'Key = value'"):
        read_mdoc(_damaged(tmp_path, cut))


def test_missing_tilt_angle(tmp_path):
    text = TS_01.read_text().replace("TiltAngle = 33.001\n", "")
    assert text != TS_01.read_text()
    with pytest.raises(MdocError,
                       match=r"TS_01.mdoc: \[ZValue = \d+\] \(line \d+\): TiltAngle missing"):
        read_mdoc(_damaged(tmp_path, text))


def test_unparseable_value(tmp_path):
    text = TS_01.read_text().replace("TiltAngle = 3.00113", "TiltAngle = three")
    with pytest.raises(MdocError, match=r"\[ZValue = 1\].*TiltAngle: cannot parse 'three'"):
        read_mdoc(_damaged(tmp_path, text))


def test_bad_datetime_and_no_sections(tmp_path):
    text = TS_01.read_text().replace("30-Nov-15  15:22:37", "30-Foo-15  15:22:37")
    with pytest.raises(MdocError, match=r"\[ZValue = 1\].*DateTime"):
        read_mdoc(_damaged(tmp_path, text))
    with pytest.raises(MdocError, match="no \\[ZValue = n\\]"):
        read_mdoc(_damaged(tmp_path, "PixelSpacing = 5.4\n"))
    with pytest.raises(MdocError, match="cannot read"):
        read_mdoc(tmp_path / "absent.mdoc")


def test_duplicate_section(tmp_path):
    text = TS_01.read_text().replace("[ZValue = 2]", "[ZValue = 1]")
    with pytest.raises(MdocError, match="duplicate section"):
        read_mdoc(_damaged(tmp_path, text))


@pytest.mark.parametrize("name", ["TS_01.mdoc", "frame_set_single.mdoc"])
def test_write_and_read_again_gives_the_same_values(tmp_path, name):
    from dataclasses import asdict

    from tomoweave.formats.mdoc import write_mdoc

    mdoc = read_mdoc(DATA / name)
    write_mdoc(tmp_path / name, mdoc)
    again = read_mdoc(tmp_path / name)
    first, second = asdict(mdoc), asdict(again)
    first.pop("path"), second.pop("path")
    for a, b in zip(first.pop("sections"), second.pop("sections"), strict=True):
        a.pop("line_number"), b.pop("line_number")
        assert a == b
    assert first == second
