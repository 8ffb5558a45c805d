"""export.relion5 writes what RELION 5 reads (issue 11, "RELION 5 refuses the export").

Each rule is RELION 5.1's own, checked here without the program (tests/test_relion5_real.py runs
the program itself): stack slices named ``n@stack.mrc:mrcs`` (Image::read refuses ``n@x.mrc``),
particle optics equal to tomograms.star (Tomogram::validateParticleOptics), a defocus for every
tilt (TomogramSet::loadTomogram reads _rlnDefocusU/V/Angle unconditionally), and every path
resolving from the one folder RELION runs in.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from conftest import snapshot_project, write_stack

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats import FormatWarning, relion5
from tomoweave.formats.star_io import read_star_blocks, split_relion_image_name, star_table
from tomoweave.model import Acquisition, CtfTilt, Particle, TiltImage, TiltSeries


def _series(name: str, acquisition: Acquisition, stack: str, *, ctf: bool = True,
            defocus_a: float | None = 30000.0) -> TiltSeries:
    tilts = [TiltImage(tilt_deg=float(angle), acquisition_order=index,
                       pre_exposure_e_a2=3.0 * index, image_path=stack, image_index=index,
                       nominal_defocus_a=defocus_a,
                       ctf=CtfTilt(defocus_u_a=31000.0 + index, defocus_v_a=30500.0,
                                   astigmatism_angle_deg=12.0) if ctf else None)
             for index, angle in enumerate(range(-30, 31, 10))]
    return TiltSeries(name=name, acquisition=acquisition, image_size_xy=(64, 64), tilts=tilts)


def test_stack_slices_are_named_as_relion_reads_them(tmp_path):
    stack = str(tmp_path / "data" / "TS_01.mrc")
    already = str(tmp_path / "data" / "TS_02.mrcs")
    acquisition = Acquisition(pixel_size_a=2.0)
    tomograms_star = relion5.write_relion5(
        tmp_path / "relion", [_series("TS_01", acquisition, stack),
                              _series("TS_02", acquisition, already)], (64, 64, 16))
    names = star_table(tmp_path / "relion" / "tilt_series" / "TS_01.star")["rlnMicrographName"]
    assert list(names) == [f"{i}@../data/TS_01.mrc:mrcs" for i in range(1, 8)]
    names = star_table(tmp_path / "relion" / "tilt_series" / "TS_02.star")["rlnMicrographName"]
    assert list(names) == [f"{i}@../data/TS_02.mrcs" for i in range(1, 8)]  # a .mrcs needs no type
    back = {s.name: s for s in relion5.read_relion5(tomograms_star)}
    assert [t.image_index for t in back["TS_01"].tilts] == list(range(7))
    assert {t.image_path for t in back["TS_01"].tilts} == {"../data/TS_01.mrc"}
    assert split_relion_image_name("12@Tomograms/job007/TS_03.mrc:mrcs") == (
        11, "Tomograms/job007/TS_03.mrc")
    assert split_relion_image_name("MotionCorr/job002/frames/TS_03_001.mrc") == (
        None, "MotionCorr/job002/frames/TS_03_001.mrc")


def test_particle_optics_agree_with_tomograms_star(tmp_path):
    """RELION refuses particles whose optics group differs from their tomogram's voltage, Cs,
    amplitude contrast or tilt-series pixel size (Tomogram::validateParticleOptics)."""
    krios = Acquisition(pixel_size_a=1.724, voltage_kv=200.0, spherical_aberration_mm=2.0,
                        amplitude_contrast=0.1)
    other = Acquisition(pixel_size_a=2.1, voltage_kv=300.0, spherical_aberration_mm=2.7,
                        amplitude_contrast=0.07)
    series = [_series("TS_01", krios, "/data/TS_01.mrc"), _series("TS_02", other, "/data/b.mrc")]
    particles = [Particle(name=f"{name}/{i}", tomogram=name, position_a=(10.0 * i, 0.0, 5.0),
                          rotation=np.eye(3).tolist())
                 for name in ("TS_02", "TS_01") for i in range(3)]
    written = relion5.write_relion5_export(tmp_path, series, particles, tomo_size_xyz=(64, 64, 16))
    assert {p.name for p in written} >= {"tomograms.star", "particles.star",
                                         "optimisation_set.star"}
    tomograms = star_table(tmp_path / "tomograms.star", "global").set_index("rlnTomoName")
    blocks = read_star_blocks(tmp_path / "particles.star")
    optics = blocks["optics"].set_index("rlnOpticsGroup")
    for _, particle in blocks["particles"].iterrows():
        group = optics.loc[particle["rlnOpticsGroup"]]
        tomogram = tomograms.loc[particle["rlnTomoName"]]
        for column in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                       "rlnTomoTiltSeriesPixelSize"):
            assert abs(group[column] - tomogram[column]) < 1e-6, (particle["rlnTomoName"], column)


def test_series_without_ctf_gets_the_nominal_defocus_and_says_so(tmp_path):
    series = _series("TS_01", Acquisition(pixel_size_a=2.0), "/data/TS_01.mrc", ctf=False,
                     defocus_a=42000.0)
    with pytest.warns(FormatWarning, match="TS_01: 7 of 7 tilts have no CTF estimate.*42000 Å"):
        relion5.write_relion5(tmp_path, [series], (64, 64, 16))
    table = star_table(tmp_path / "tilt_series" / "TS_01.star")
    assert list(table["rlnDefocusU"]) == [42000.0] * 7 == list(table["rlnDefocusV"])
    assert list(table["rlnDefocusAngle"]) == [0.0] * 7
    unknown = _series("TS_01", Acquisition(pixel_size_a=2.0), "/d/a.mrc", ctf=False, defocus_a=None)
    with pytest.raises(ValueError, match=r"TS_01: RELION 5 needs a defocus for every tilt.*--defocus"):
        relion5.write_relion5(tmp_path / "no", [unknown], (64, 64, 16))


def test_export_without_any_defocus_is_refused_in_one_line(tmp_path):
    project = Project.init(tmp_path / "project")
    stack = write_stack(tmp_path / "data" / "TS_01.mrc", 7, size_yx=(32, 32), pixel_size_a=4.0)
    series = project.run("import.tiltseries", params={"files": [str(stack)]}, executor="inline")
    before = snapshot_project(project.root)
    with pytest.raises(InputError, match=r"^TS_01: RELION 5 needs a defocus .*--defocus Å\)$"):
        project.run("export.relion5", inputs={"tilt_series": series.name},
                    params={"out_dir": str(tmp_path / "relion")}, executor="inline")
    assert snapshot_project(project.root) == before
    run = project.run("export.relion5", inputs={"tilt_series": series.name},
                      params={"out_dir": str(tmp_path / "relion"), "defocus_a": 25000.0},
                      executor="inline")
    assert run.state == "finished"
    log = (project.root / run.record.folder / "logs" / "run.log").read_text()
    assert "WARNING TS_01: 7 of 7 tilts have no CTF estimate" in log
    assert [j["warnings"] for j in project.catalog.journal(run.id).values()] == [1]  # the badge
    assert set(star_table(tmp_path / "relion" / "tilt_series" / "TS_01.star")["rlnDefocusU"]) == {
        25000.0}


def test_every_path_of_the_export_resolves_from_the_export_folder(tmp_path):
    """RELION reads every file name relative to the folder it runs in: tilt-series STAR files,
    stacks, tomograms and the optimisation set's files must all resolve from one folder, here
    the export folder, with the project elsewhere."""
    project = Project.init(tmp_path / "projects" / "p1")
    stack = write_stack(tmp_path / "data" / "TS_01.mrc", 7, size_yx=(32, 32), pixel_size_a=4.0)
    series = project.run("import.tiltseries", params={"files": [str(stack)]}, executor="inline")
    with mrcfile.new(tmp_path / "data" / "TS_01_rec.mrc") as volume:
        volume.set_data(np.zeros((8, 16, 16), np.float32))
        volume.voxel_size = 8.0
    tomogram = project.run("import.tomogram", params={"files": [str(tmp_path / "data" /
                                                                    "TS_01_rec.mrc")],
                                                      "tilt_series": "TS_01"}, executor="inline")
    particles = [Particle(name="TS_01/1", tomogram="TS_01", position_a=(1.0, 2.0, 3.0),
                          rotation=np.eye(3).tolist())]
    relion5.write_relion5_export(tmp_path / "x", [], particles, acquisition=Acquisition(
        pixel_size_a=4.0))
    imported = project.run("import.relion5", params={"files": [str(tmp_path / "x" /
                                                                   "particles.star")]},
                           executor="inline")
    export = tmp_path / "relion" / "export"
    project.run("export.relion5", inputs={"tilt_series": series.name, "tomograms": tomogram.name,
                                          "particles": f"{imported.name}.particles"},
                params={"out_dir": str(export), "defocus_a": 25000.0}, executor="inline")
    global_table = star_table(export / "tomograms.star", "global")
    names = [*global_table["rlnTomoTiltSeriesStarFile"],
             *global_table["rlnTomoReconstructedTomogram"]]
    for star in global_table["rlnTomoTiltSeriesStarFile"]:
        names += [split_relion_image_name(n)[1] for n in star_table(export / star)[
            "rlnMicrographName"]]
    optimisation = read_star_blocks(export / "optimisation_set.star")[""]
    names += [optimisation["rlnTomoParticlesFile"], optimisation["rlnTomoTomogramsFile"]]
    for name in names:
        assert not Path(name).is_absolute() and (export / name).is_file(), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading back is silent
        (back,) = relion5.read_relion5(export / "tomograms.star")
    assert (export / back.tilts[0].image_path).resolve() == stack.resolve()
