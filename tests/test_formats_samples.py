"""Every sample file in ../shared/data read into model objects (values checked against the file),
written back and read again (floats within 1e-5 relative)."""

from pathlib import Path

import numpy as np
import pytest
from formats_compare import differences

from tomoweave.formats import aretomo, ctffind, imod, relion5, warp
from tomoweave.formats.imod_extra import read_newst_com, read_tilt_com

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_relion5_tomograms_and_tilt_series(tmp_path):
    entries = relion5.read_tomograms_star(DATA / "relion5" / "tomograms.star")
    assert len(entries) == 10 and entries[5].name == "tomo200528_107"
    assert entries[0].acquisition.voltage_kv == 200.0
    assert entries[0].acquisition.pixel_size_a == pytest.approx(1.724)
    assert entries[0].acquisition.amplitude_contrast == pytest.approx(0.08)
    assert entries[0].binning == pytest.approx(8.12065) and entries[0].size_xyz == (4000, 4000, 2000)
    tomogram = entries[0].tomogram()
    assert tomogram.pixel_size_a == pytest.approx(1.724 * 8.12065)
    (series,) = relion5.read_relion5(DATA / "relion5" / "tomograms.star")
    assert series.name == "tomo200528_107" and len(series.tilts) == 35
    first = series.tilts[0]
    assert first.tilt_deg == pytest.approx(-50.9936)
    assert first.pre_exposure_e_a2 == pytest.approx(68.2)
    assert first.nominal_defocus_a == pytest.approx(30000.0)
    assert first.movie_path == "../raw/tomo200528_107_-51.0_May31_00.24.27.tif"
    assert first.frame_count == 8
    assert first.alignment.y_tilt_deg == pytest.approx(-50.99)
    assert first.alignment.z_rot_deg == pytest.approx(-90.5451)
    assert first.alignment.shift_x_a == pytest.approx(9.537168)
    assert first.alignment.shift_y_a == pytest.approx(-19.87772)
    assert first.ctf.defocus_u_a == pytest.approx(24013.296875)
    assert first.ctf.defocus_v_a == pytest.approx(22401.580078)
    assert first.ctf.astigmatism_angle_deg == pytest.approx(-58.5313)
    assert first.ctf.fit_resolution_a == pytest.approx(25.0)
    zero_tilt = next(t for t in series.tilts if t.pre_exposure_e_a2 == 0.0)
    assert zero_tilt.acquisition_order == 0 and zero_tilt.tilt_deg == pytest.approx(0.00846)
    assert series.acquisition.tilt_axis_deg == pytest.approx(-91.0)
    assert series.acquisition.dose_per_tilt_e_a2 == pytest.approx(2.2)
    again = relion5.read_relion5(relion5.write_relion5(tmp_path, [series]))
    assert differences(series, again[0]) == []


def test_warp_xml(tmp_path):
    series = warp.read_warp_xml(DATA / "warp" / "gs04_ts_003.xml")
    assert len(series.tilts) == 47 and series.pixel_size_a == pytest.approx(0.7303)
    first = series.tilts[0]
    # Warp stores -stage tilt: the movie of <Angles> 46 is the stage's -46.0
    assert "_-46.0_" in first.movie_path and first.alignment.y_tilt_deg == pytest.approx(-46.0)
    assert first.alignment.z_rot_deg == pytest.approx(84.500114)
    assert first.alignment.shift_x_a == pytest.approx(-10.848754)
    assert first.alignment.shift_y_a == pytest.approx(38.199642)
    assert first.pre_exposure_e_a2 == pytest.approx(140.97852)
    assert first.ctf.defocus_u_a == pytest.approx((5.162571 + 0.008811178) * 1e4)
    assert first.ctf.defocus_v_a == pytest.approx((5.162571 - 0.008811178) * 1e4)
    assert first.ctf.astigmatism_angle_deg == pytest.approx(129.0)
    assert series.acquisition.voltage_kv == 300.0
    assert min(series.tilts, key=lambda t: t.acquisition_order).pre_exposure_e_a2 == \
        pytest.approx(15.4122)
    warp.write_warp_xml(tmp_path / "gs04_ts_003.xml", series)
    assert differences(series, warp.read_warp_xml(tmp_path / "gs04_ts_003.xml")) == []
    warp.write_tomostar(tmp_path / "gs04_ts_003.tomostar", series)
    star = warp.read_tomostar(tmp_path / "gs04_ts_003.tomostar", series.pixel_size_a,
                              acquisition=series.acquisition)
    assert [d for d in differences(series, star) if ".ctf" not in d] == []


def test_imod_alignment_files(tmp_path):
    tlt = imod.read_tilt_angles(DATA / "imod" / "tilt_1.tlt")
    xf = imod.read_xf(DATA / "imod" / "tilt_1.xf")
    xtilt = imod.read_tilt_angles(DATA / "imod" / "tilt_1.xtilt")
    assert len(tlt) == len(xf) == len(xtilt)
    assert xf[1] == pytest.approx(np.array([[-0.1809102, -0.9834990, -9.674],
                                            [0.9834990, -0.1809102, 79.619]]))
    alignments = imod.xf_to_alignments(xf, tlt, 2.0, xtilt)
    imod.write_xf(tmp_path / "a.xf", imod.alignments_to_xf(alignments, 2.0))
    imod.write_tilt_angles(tmp_path / "a.tlt", [a.y_tilt_deg for a in alignments])
    back = imod.xf_to_alignments(imod.read_xf(tmp_path / "a.xf"),
                                 imod.read_tilt_angles(tmp_path / "a.tlt"), 2.0, xtilt)
    assert differences(alignments, back, rtol=1e-5, atol=2e-3) == []  # .xf keeps 3 decimals
    raw = imod.read_tilt_angles(DATA / "imod" / "test_angles.rawtlt")
    assert raw[0] == -51.0 and len(raw) == 35


def test_imod_com_files():
    tilt = read_tilt_com(DATA / "imod" / "tilt.com")
    assert tilt.thickness_px == 2000 and tilt.image_binned == 4.0
    assert tilt.full_image_xy == (3708, 3832) and tilt.tilt_file == "mka2018-10-01-1.tlt"
    assert tilt.xtilt_file == "mka2018-10-01-1.xtilt" and tilt.shift_xz_px == (0.0, 0.0)
    newst = read_newst_com(DATA / "imod" / "newst.com")
    assert newst.bin_by == 4.0 and newst.size_xy == (928, 958)
    assert newst.transform_file == "mka2018-10-01-1.xf"


def test_aretomo_aln_with_local_patches_and_dark_frames(tmp_path):
    aln = aretomo.read_aln(DATA / "aretomo" / "test.aln")
    assert aln.raw_size_xyz == (2032, 2032, 90) and aln.num_patches == 16
    assert aln.dark_frames == [(1, 0, -66.0), (2, 0, -64.5), (88, 0, 66.0), (89, 0, 67.5)]
    assert aln.global_rows.shape == (4, 10) and aln.local_rows.shape == (6, 7)
    assert aln.column("rot")[0] == pytest.approx(-12.6611)
    assert aln.column("tx")[1] == pytest.approx(34.451)
    assert aln.local_rows[2].tolist() == pytest.approx([0, 2, 19.88, -701.35, 29.18, -5.75, 1.0])
    alignments = aretomo.aln_to_alignments(aln, pixel_size_a=1.5)
    assert alignments[0].z_rot_deg == pytest.approx(12.6611)
    assert alignments[0].shift_x_a == pytest.approx(24.786 * 1.5)
    aretomo.write_aln(tmp_path / "test.aln", aln)
    again = aretomo.read_aln(tmp_path / "test.aln")
    assert np.allclose(again.global_rows, aln.global_rows, rtol=1e-5)
    assert np.allclose(again.local_rows, aln.local_rows, rtol=1e-5)
    assert again.dark_frames == aln.dark_frames and again.num_patches == 16


def test_aretomo_global_aln_ctf_and_metrics(tmp_path):
    aln = aretomo.read_aln(DATA / "aretomo" / "global_no_local.aln")
    assert aln.raw_size_xyz == (4096, 4096, 61) and aln.alpha_offset_deg == -7.0
    assert aln.thickness_px == 2050 and len(aln.global_rows) == 61
    ctfs = ctffind.read_ctffind_txt(DATA / "aretomo" / "test_CTF.txt")
    assert len(ctfs) == 3 and ctfs[2].defocus_u_a == pytest.approx(20648.45)
    assert ctfs[0].astigmatism_angle_deg == pytest.approx(88.08)
    assert ctfs[2].fit_resolution_a == pytest.approx(11.0736)
    ctffind.write_ctffind_txt(tmp_path / "c.txt", ctfs)
    assert differences(ctfs, ctffind.read_ctffind_txt(tmp_path / "c.txt")) == []
    metrics = aretomo.read_aretomo_metrics(DATA / "aretomo" / "TiltSeries_Metrics.csv")
    assert [m.tilt_series for m in metrics] == ["pda2021-01-12-1.mrc", "pda2021-01-12-2.mrc"]
    assert metrics[1].tilt_axis_deg == pytest.approx(100.59)
    assert metrics[0].thickness_px == 2240 and metrics[0].pixel_size_a == pytest.approx(1.69)
    assert imod.read_tilt_angles(DATA / "aretomo" / "test.rawtlt").tolist() == [-66, -64.5, -63]
    assert imod.read_xf(DATA / "aretomo" / "test.xf").shape == (3, 2, 3)


def test_ctf_files(tmp_path):
    entries = ctffind.read_imod_defocus(DATA / "ctf" / "test_imod.defocus")
    assert len(entries) == 35
    assert (entries[0].start_view, entries[0].start_tilt_deg) == (1, -50.99)
    assert entries[0].ctf.defocus_u_a == pytest.approx(30830.0)  # 3083 nm
    ctfs = ctffind.defocus_entries_per_view(entries, 35)
    ctffind.write_imod_defocus(tmp_path / "a.defocus", ctfs, [e.start_tilt_deg for e in entries])
    again = ctffind.defocus_entries_per_view(ctffind.read_imod_defocus(tmp_path / "a.defocus"), 35)
    assert differences(ctfs, again) == []
    defocus_nm = ctffind.read_value_list(DATA / "ctf" / "test_defocus.txt")
    assert defocus_nm[:3].tolist() == [3083, 3084, 3147]
    assert np.allclose(defocus_nm * 10, [c.defocus_u_a for c in ctfs])
    dose = ctffind.read_value_list(DATA / "ctf" / "test_dose.txt")
    assert len(dose) == 35 and dose[0] == pytest.approx(60.165)
    ctffind.write_value_list(tmp_path / "dose.txt", dose)
    assert np.allclose(ctffind.read_value_list(tmp_path / "dose.txt"), dose, rtol=1e-5)


def test_ctfplotter_version3_flags(tmp_path):
    path = tmp_path / "v3.defocus"
    path.write_text("15 0 0.0 0.0 0.0 3\n1 1 -60.0 -60.0 3000.0 2900.0 1.5707963 0.5\n"
                    "2 2 -57.0 -57.0 3010.0 2950.0 0.0 0.0\n")
    first, second = ctffind.read_imod_defocus(path)
    assert first.ctf.defocus_u_a == pytest.approx(30000.0)
    assert first.ctf.defocus_v_a == pytest.approx(29000.0)
    assert first.ctf.astigmatism_angle_deg == pytest.approx(90.0)  # flag 2: radians
    assert first.ctf.phase_shift_deg == pytest.approx(np.degrees(0.5))  # flag 8: radians
    assert (second.start_view, second.start_tilt_deg) == (2, -57.0)
