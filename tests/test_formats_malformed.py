"""Malformed inputs give errors naming the file, the line or column, and what was expected."""

from pathlib import Path

import pytest

from tomoweave.convert import ConvertOptions, convert
from tomoweave.formats import aretomo, ctffind, dynamo, relion5, warp
from tomoweave.formats import relion_particles as rp
from tomoweave.formats.aretomo import AlnError
from tomoweave.formats.imod import ImodFormatError, read_xf
from tomoweave.formats.star_io import StarFormatError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_star_missing_column(tmp_path):
    text = (DATA / "relion5" / "tomo200528_107.star").read_text()
    broken = tmp_path / "tomo200528_107.star"
    broken.write_text(text.replace("_rlnTomoZRot #22", "_rlnTomoZRotation #22"))
    entry = relion5.read_tomograms_star(DATA / "relion5" / "tomograms.star")[5]
    with pytest.raises(StarFormatError,
                       match=r"tomo200528_107.star: data_tomo200528_107: column _rlnTomoZRot "
                             r"missing \(needed for the tilt alignment"):
        relion5.read_tilt_series_star(broken, entry, (4000, 4000))


def test_star_non_number_names_row_and_column(tmp_path):
    text = (DATA / "relion5" / "tomo200528_107.star").read_text()
    broken = tmp_path / "tomo200528_107.star"
    broken.write_text(text.replace("24013.296875", "lots", 1))
    entry = relion5.read_tomograms_star(DATA / "relion5" / "tomograms.star")[5]
    with pytest.raises(StarFormatError, match=r"column _rlnDefocusU, row 1: expected a number, "
                                              r"got 'lots'"):
        relion5.read_tilt_series_star(broken, entry, (4000, 4000))


def test_particles_star_missing_coordinate(tmp_path):
    star = tmp_path / "particles.star"
    star.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
                    "_rlnCenteredCoordinateYAngst #3\nTS_01 1.0 2.0\n")
    with pytest.raises(StarFormatError, match=r"particles.star: data_particles: column "
                                              r"_rlnCenteredCoordinateZAngst missing"):
        rp.read_relion5_particles(star)


def test_xf_short_line(tmp_path):
    lines = (DATA / "imod" / "tilt_1.xf").read_text().splitlines()
    lines[6] = " ".join(lines[6].split()[:5])
    broken = tmp_path / "tilt_1.xf"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImodFormatError, match=r"tilt_1.xf: line 7: expected 6 numbers "
                                              r"\(A11 A12 A21 A22 DX DY\), got 5"):
        read_xf(broken)


def test_aln_fewer_rows_than_tilts(tmp_path):
    aln = DATA / "aretomo" / "global_no_local.aln"
    tilts = tmp_path / "global_no_local.tlt"
    tilts.write_text((DATA / "aretomo" / "global_no_local.tlt").read_text() + "  64.80\n")
    with pytest.raises(AlnError, match=r"global_no_local.aln: lines 8-68: 61 alignment rows, but "
                                       r"global_no_local.tlt has 62 tilts; expected one row per"):
        convert(aln, "imod", tmp_path / "out", ConvertOptions(tilts_file=str(tilts)))
    assert not (tmp_path / "out").exists()


def test_aln_row_with_missing_column(tmp_path):
    lines = (DATA / "aretomo" / "global_no_local.aln").read_text().splitlines()
    lines[9] = " ".join(lines[9].split()[:9])
    broken = tmp_path / "bad.aln"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(AlnError, match=r"bad.aln: line 10: expected 10 columns \(sec rot gmag tx "
                                       r"ty smean sfit scale base tilt\), got 9"):
        aretomo.read_aln(broken)


def test_ctf_and_dynamo_and_warp_errors(tmp_path):
    ctf = tmp_path / "bad_CTF.txt"
    ctf.write_text("# header\n1 25000 24000 10 0 0.1\n")
    with pytest.raises(ctffind.CtfFormatError, match=r"bad_CTF.txt: line 2: expected at least 7"):
        ctffind.read_ctffind_txt(ctf)
    table = tmp_path / "bad.tbl"
    table.write_text(" ".join(["1"] * 26) + "\n" + " ".join(["1"] * 12) + "\n")
    with pytest.raises(dynamo.DynamoFormatError, match=r"bad.tbl: line 2: expected at least 26"):
        dynamo.read_dynamo_table(table, 5.0, (10, 10, 10))
    xml = tmp_path / "ts.xml"
    xml.write_text("<TiltSeries><Angles>1\n2\n3</Angles><Dose>0\n1</Dose></TiltSeries>")
    with pytest.raises(warp.WarpFormatError, match=r"ts.xml: <Dose> has 2 values, expected 3"):
        warp.read_warp_xml(xml, pixel_size_a=1.0)


def test_unknown_and_unreadable_files(tmp_path):
    odd = tmp_path / "thing.xyz"
    odd.write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"thing.xyz: unknown format"):
        convert(odd, "imod", tmp_path / "o")
    star = tmp_path / "x.star"
    star.write_text("data_\nloop_\n_rlnFoo #1\n1\n")
    with pytest.raises(ValueError, match=r"x.star: a STAR file with none of the columns"):
        convert(star, "imod", tmp_path / "o")
