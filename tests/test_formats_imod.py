"""IMOD .tlt/.rawtlt/.xtilt/.xf reading and writing against the real sample files."""

from pathlib import Path

import numpy as np
import pytest

from tomoweave.formats.imod import (
    ImodFormatError,
    alignments_to_xf,
    read_tilt_angles,
    read_xf,
    write_tilt_angles,
    write_xf,
    xf_to_alignments,
)
from tomoweave.geometry import project_points_a, projection_matrix

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMOD = DATA / "imod"


def test_read_tlt_rawtlt_xtilt():
    tlt = read_tilt_angles(IMOD / "tilt_1.tlt")
    assert tlt[:3] == pytest.approx([-52.24, -50.24, -48.24])
    raw = read_tilt_angles(IMOD / "test_angles.rawtlt")
    assert raw[0] == pytest.approx(-51.0) and raw[1] == pytest.approx(-48.0)
    xtilt = read_tilt_angles(IMOD / "tilt_1.xtilt")
    assert len(xtilt) == len(tlt) and np.all(xtilt == 0.0)


def test_read_xf_values_and_round_trip(tmp_path):
    xf = read_xf(IMOD / "tilt_1.xf")
    assert xf.shape == (len(read_tilt_angles(IMOD / "tilt_1.tlt")), 2, 3)
    assert xf[0] == pytest.approx(
        np.array([[-0.1813379, -0.9834202, -58.170], [0.9834202, -0.1813379, 69.816]])
    )
    write_xf(tmp_path / "out.xf", xf)
    assert np.allclose(read_xf(tmp_path / "out.xf"), xf, rtol=1e-5, atol=1e-7)
    tlt = read_tilt_angles(IMOD / "tilt_1.tlt")
    write_tilt_angles(tmp_path / "out.tlt", tlt)
    assert np.allclose(read_tilt_angles(tmp_path / "out.tlt"), tlt, rtol=1e-5)


def test_xf_alignment_round_trip():
    xf = read_xf(IMOD / "tilt_1.xf")
    tlt = read_tilt_angles(IMOD / "tilt_1.tlt")
    alignments = xf_to_alignments(xf, tlt, pixel_size_a=2.5)
    # the xf rotation of ~100° (cos -0.18, sin 0.98) is the raw->aligned map, so z_rot ≈ -100°
    assert alignments[0].z_rot_deg == pytest.approx(-np.degrees(np.arctan2(0.9834202, -0.1813379)))
    back = alignments_to_xf(alignments, pixel_size_a=2.5)
    assert np.allclose(back, xf, atol=1e-6)


def test_xf_alignment_maps_aligned_to_raw():
    """A specimen point projected with the alignment lands where the .xf says the raw point is."""
    xf = read_xf(IMOD / "tilt_1.xf")[:5]
    tlt = read_tilt_angles(IMOD / "tilt_1.tlt")[:5]
    pixel = 3.0
    alignments = xf_to_alignments(xf, tlt, pixel_size_a=pixel)
    point = np.array([[120.0, -340.0, 55.0]])  # Å from the tomogram centre
    for transform, tilt, alignment in zip(xf, tlt, alignments, strict=True):
        aligned_px = project_points_a(projection_matrix(tilt), point)[0] / pixel
        raw_px = project_points_a(
            projection_matrix(alignment.y_tilt_deg, 0, alignment.z_rot_deg,
                              alignment.shift_x_a, alignment.shift_y_a,
                              alignment.magnification), point)[0] / pixel
        assert transform[:, :2] @ raw_px + transform[:, 2] == pytest.approx(aligned_px, abs=1e-6)


def test_malformed_files_name_line(tmp_path):
    bad_tlt = tmp_path / "bad.tlt"
    bad_tlt.write_text("-3.0\n0.0\nthree\n")
    with pytest.raises(ImodFormatError, match=r"bad.tlt: line 3: expected one angle.*'three'"):
        read_tilt_angles(bad_tlt)
    bad_xf = tmp_path / "bad.xf"
    bad_xf.write_text("1 0 0 1 0 0\n1 0 0 1 0\n")
    with pytest.raises(ImodFormatError, match=r"bad.xf: line 2: expected 6 numbers .*got 5"):
        read_xf(bad_xf)
    empty = tmp_path / "empty.tlt"
    empty.write_text("\n")
    with pytest.raises(ImodFormatError, match="empty.tlt: empty file"):
        read_tilt_angles(empty)
