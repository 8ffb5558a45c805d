"""Wrappers of programs that cannot be installed here: the command line they build (AreTomo2's
documented options) and their reading of the program's real output file into the model.

The program is stood in for by a script on TOMOWEAVE_ARETOMO that records its arguments and
writes AreTomo2's real .aln (../shared/data/aretomo/global_no_local.aln: 61 tilts of a 4096²
series) where AreTomo2 writes it: beside -OutMrc, with the suffix .aln."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_stack

from tomoweave.api import Project
from tomoweave.engine import registry

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ALN = SHARED / "aretomo" / "global_no_local.aln"

STAND_IN = """#!/bin/sh
if [ "$1" = --version ]; then echo "AreTomo2 version 1.1.2"; exit 0; fi
python3 -c 'import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], "w"))' "{args}" "$@"
out=""; prev=""
for a in "$@"; do [ "$prev" = -OutMrc ] && out="$a"; prev="$a"; done
cp "{aln}" "${{out%.mrc}}.aln"
echo "AreTomo2: done"
"""


@pytest.fixture
def aretomo(tmp_path, monkeypatch):
    folder = tmp_path / "aretomo-bin"
    folder.mkdir()
    script = folder / "AreTomo2"
    script.write_text(STAND_IN.format(args=tmp_path / "args.json", aln=ALN))
    script.chmod(0o755)
    monkeypatch.setenv("TOMOWEAVE_ARETOMO", str(folder))
    return script, tmp_path / "args.json"


def test_aretomo_is_listed_as_missing_until_found(monkeypatch):
    monkeypatch.delenv("TOMOWEAVE_ARETOMO", raising=False)
    if shutil.which("AreTomo2") or shutil.which("AreTomo"):
        pytest.skip("AreTomo is installed here")
    program = registry.programs()["AreTomo2"]
    assert program.locate() is None and "czimaginginstitute/AreTomo2" in program.install_hint
    assert "aretomo.align" not in registry.protocols()


@pytest.mark.skipif(not ALN.is_file(), reason="../shared/data is not beside the checkout")
def test_aretomo_align_command_and_aln_parsed(tmp_path, aretomo):
    script, args_file = aretomo
    angles = [float(v) for v in (SHARED / "aretomo" / "global_no_local.tlt").read_text().split()]
    stack = write_stack(tmp_path / "data" / "TS_07.mrc", len(angles), (32, 32), pixel_size_a=2.0)
    stack.with_suffix(".tlt").write_text("".join(f"{a:.2f}\n" for a in angles))
    project = Project.init(tmp_path / "proj")
    project.run("import.tiltseries", params={"files": [str(stack)], "tilt_axis_deg": -95.0},
                executor="inline", name="raw")
    assert "aretomo.align" in registry.protocols(project.root)
    run = project.run("aretomo.align", inputs={"tilt_series": "raw"},
                      params={"binning": 8, "patches": [4, 4], "alignment_thickness_px": 1800},
                      executor="inline")
    assert run.state == "finished", run.record.error
    work = project.root / run.folder / "work" / "TS_07"
    (raw,) = project.items("raw")
    assert json.loads(args_file.read_text()) == [
        "-InMrc", str(project.path(raw.tilts[0].image_path)), "-OutMrc",
        str(work / "TS_07_aretomo.mrc"),
        "-AngFile", str(work / "TS_07.tlt"), "-VolZ", "0", "-OutBin", "8", "-TiltAxis", "-95",
        "1", "-DarkTol", "0.7", "-Gpu", "0", "-AlignZ", "1800", "-Patch", "4", "4"]
    (series,) = project.items(run)
    rows = [line.split() for line in ALN.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(rows) == len(series.tilts) == 61
    for tilt, row in zip(series.tilts, rows, strict=True):
        rot, tx, ty, tilt_deg = float(row[1]), float(row[3]), float(row[4]), float(row[9])
        # formats.aretomo's rule (proven against the .xf AreTomo wrote for this alignment,
        # test_formats_convert): z_rot = -ROT, shift = (TX, TY) × pixel (2 Å here)
        assert tilt.alignment.z_rot_deg == pytest.approx(-rot, abs=1e-4)
        assert tilt.alignment.y_tilt_deg == pytest.approx(tilt_deg, abs=1e-4)
        assert (tilt.alignment.shift_x_a, tilt.alignment.shift_y_a) == pytest.approx(
            (2.0 * tx, 2.0 * ty), rel=1e-6)
    command = run.record.provenance["commands"][0]
    assert command["programs"][0] == {"name": "AreTomo2", "family": "AreTomo",
                                      "path": str(script), "version": "1.1.2"}


DEFOCUS = SHARED / "ctf" / "test_imod.defocus"
CTFPLOTTER_STAND_IN = """#!/bin/sh
python3 -c 'import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], "w"))' "{args}" "$@"
out=""; prev=""
for a in "$@"; do [ "$prev" = -DefocusFile ] && out="$a"; prev="$a"; done
cp "{defocus}" "$out"
echo "ctfplotter: fitted"
"""


@pytest.mark.skipif(not DEFOCUS.is_file(), reason="../shared/data is not beside the checkout")
def test_ctfplotter_command_and_defocus_parsed(tmp_path, monkeypatch):
    folder = tmp_path / "imod-bin"
    folder.mkdir()
    script = folder / "ctfplotter"
    script.write_text(CTFPLOTTER_STAND_IN.format(args=tmp_path / "args.json", defocus=DEFOCUS))
    script.chmod(0o755)
    monkeypatch.setenv("TOMOWEAVE_IMOD", str(folder))
    rows = [line.split() for line in DEFOCUS.read_text().splitlines() if line.strip()]
    angles = [float(r[2]) for r in rows]  # the file's views: 35 tilts, -51° … 51°
    stack = write_stack(tmp_path / "data" / "TS_03.mrc", len(angles), (32, 32), pixel_size_a=2.5)
    stack.with_suffix(".tlt").write_text("".join(f"{a:.2f}\n" for a in angles))
    project = Project.init(tmp_path / "proj")
    project.run("import.tiltseries", params={"files": [str(stack)], "tilt_axis_deg": 84.5},
                executor="inline", name="raw")
    run = project.run("imod.ctfplotter", inputs={"tilt_series": "raw"},
                      params={"expected_defocus_a": 32000.0}, executor="inline")
    assert run.state == "finished", run.record.error
    work = project.root / run.folder / "work" / "TS_03"
    (raw,) = project.items("raw")
    # ctfplotter's man page: lengths in nm, fit every view (-AutoFitRangeAndStep 0,0)
    assert json.loads((tmp_path / "args.json").read_text()) == [
        "-InputStack", str(project.path(raw.tilts[0].image_path)), "-AngleFile",
        str(work / "TS_03.tlt"), "-DefocusFile", str(work / "TS_03.defocus"), "-AxisAngle",
        "84.5", "-PixelSize", "0.25", "-Voltage", "300", "-SphericalAberration", "2.7",
        "-AmplitudeContrast", "0.07", "-ExpectedDefocus", "3200", "-DefocusTol", "200",
        "-AutoFitRangeAndStep", "0,0", "-SaveAndExit"]
    (series,) = project.items(run)
    for tilt, row in zip(series.tilts, rows, strict=True):  # defocus in nm, underfocus > 0
        assert tilt.ctf.defocus_u_a == tilt.ctf.defocus_v_a == pytest.approx(10 * float(row[4]))
    assert run.record.provenance["commands"][0]["programs"][0]["path"] == str(script)
