"""import.FORMAT / export.FORMAT protocols in a project, driven through the Python API."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats import dynamo, relion_particles
from tomoweave.formats.imod import read_tilt_angles, read_xf
from tomoweave.geometry import rotation_angle_between_deg
from tomoweave.geometry.rotations import random_rotations
from tomoweave.model import Particle

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def project(tmp_path) -> Project:
    return Project.init(tmp_path / "proj")


def test_import_aretomo_onto_tilt_series_then_export_imod(project, tmp_path, stack_factory):
    stack = stack_factory("global_no_local", n_tilts=61, size_yx=(32, 32))
    shutil.copy(DATA / "aretomo" / "global_no_local.tlt", stack.with_suffix(".tlt"))
    series_run = project.run("import.tiltseries", params={"files": [str(stack)],
                                                          "pixel_size_a": 4.0}, executor="inline")
    imported = project.run("import.aretomo", inputs={"tilt_series": series_run.name},
                           params={"files": [str(DATA / "aretomo" / "global_no_local.aln")]},
                           executor="inline")
    assert imported.state == "finished"
    (series,) = project.items(imported, "tilt_series")
    assert series.tilts[0].image_path is not None  # the project's stack is kept
    assert series.tilts[0].alignment.shift_x_a == pytest.approx(9.220 * 4.0)
    assert series.tilts[0].alignment.z_rot_deg == pytest.approx(95.404)
    exported = project.run("export.imod", inputs={"tilt_series": imported.name},
                           params={"out_dir": str(tmp_path / "imod")}, executor="inline")
    assert exported.state == "finished"
    mine = read_xf(tmp_path / "imod" / "global_no_local.xf")
    theirs = read_xf(DATA / "aretomo" / "global_no_local.xf")
    assert np.abs(mine[:, :, :2] - theirs[:, :, :2]).max() < 1e-3
    assert np.abs(mine[:, :, 2] - theirs[:, :, 2]).max() < 0.02
    assert np.allclose(read_tilt_angles(tmp_path / "imod" / "global_no_local.tlt"),
                       read_tilt_angles(DATA / "aretomo" / "global_no_local.tlt"), atol=1e-3)


def test_dynamo_import_export_relion5_and_back(project, tmp_path):
    rng = np.random.default_rng(5)
    particles = [Particle(name=f"TS_01/{i}", tomogram="TS_01",
                          position_a=tuple(rng.uniform(-500, 500, 3)), rotation=r.tolist())
                 for i, r in enumerate(random_rotations(12, rng))]
    dynamo.write_dynamo_table(tmp_path / "in.tbl", particles, 10.0, (201, 200, 61))
    imported = project.run("import.dynamo", params={
        "files": [str(tmp_path / "in.tbl")], "pixel_size_a": 10.0,
        "tomo_size_xyz": [201, 200, 61]}, executor="inline")
    assert imported.state == "finished"
    exported = project.run("export.relion5", inputs={"particles": imported.name},
                           params={"out_dir": str(tmp_path / "r5"), "pixel_size_a": 10.0},
                           executor="inline")
    assert exported.state == "finished"
    back = relion_particles.read_relion5_particles(tmp_path / "r5" / "particles.star")
    again = project.run("export.dynamo", inputs={"particles": imported.name},
                        params={"out_dir": str(tmp_path / "dyn"), "pixel_size_a": 10.0,
                                "tomo_size_xyz": [201, 200, 61]}, executor="inline")
    assert again.state == "finished"
    table = dynamo.read_dynamo_table(tmp_path / "dyn" / "TS_01.tbl", 10.0, (201, 200, 61),
                                     tmp_path / "dyn" / "TS_01.doc")
    for original, star, tbl in zip(particles, back, table, strict=True):
        for other in (star, tbl):
            assert np.abs(np.subtract(original.position_a, other.position_a)).max() < 1e-3 * 10
            assert rotation_angle_between_deg(original.rotation_matrix,
                                              other.rotation_matrix) < 1e-3


def test_import_bad_file_leaves_project_untouched(project, tmp_path):
    bad = tmp_path / "bad.aln"
    bad.write_text("# AreTomo Alignment\n# SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT\n1 2 3\n")
    runs_before = len(project.runs())
    with pytest.raises(InputError, match=r"bad.aln: line 3: expected 10 columns"):
        project.run("import.aretomo", params={"files": [str(bad)]}, executor="inline")
    assert len(project.runs()) == runs_before


def test_export_without_inputs_is_refused(project, tmp_path):
    with pytest.raises(InputError, match="give at least one input"):
        project.run("export.warp", params={"out_dir": str(tmp_path / "w")}, executor="inline")


def test_import_tomogram_and_volume_files(project, tmp_path):
    from tomoweave.formats.copick import write_ome_zarr
    from tomoweave.formats.dynamo import read_em, write_em
    from tomoweave.formats.mrc import read_mrc

    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    store = tmp_path / "ExperimentRuns" / "TS_07" / "VoxelSpacing10.000" / "wbp.zarr"
    write_ome_zarr(store, volume, 10.0)
    run = project.run("import.copick", params={"files": [str(store)]}, executor="inline")
    (tomogram,) = project.items(run, "tomograms")
    assert tomogram.name == "TS_07" and tomogram.size_xyz == (6, 5, 4)
    data, pixel = read_mrc(project.path(tomogram.path))
    assert np.array_equal(data, volume) and pixel == pytest.approx(10.0)
    write_em(tmp_path / "ref.em", volume)
    assert np.array_equal(read_em(tmp_path / "ref.em"), volume)
    run = project.run("import.dynamo", params={"files": [str(tmp_path / "ref.em")],
                                               "pixel_size_a": 8.0}, executor="inline")
    (template,) = project.items(run, "volumes")
    data, pixel = read_mrc(project.path(template.path))
    assert np.array_equal(data, volume) and pixel == pytest.approx(8.0)


EXPECTED_FILES = {
    "relion5": ["tomograms.star", "tilt_series/TS_01.star", "particles.star",
                "optimisation_set.star"],
    "imod": ["TS_01.rawtlt", "TS_01.mod"],
    "warp": ["TS_01.xml", "TS_01.tomostar", "particles_TS_01.star"],
    "dynamo": ["TS_01.tbl", "TS_01.doc"],
    "eman": ["info/TS_01_info.json", "spt/particle_parms_TS_01.json"],
    "copick": ["copick_config.json", "ExperimentRuns/TS_01/Picks/tomoweave_0_particle.json"],
}


def test_every_export_writes_its_files(project, tmp_path, stack_factory):
    stack = stack_factory("TS_01", n_tilts=5, size_yx=(32, 32))
    series_run = project.run("import.tiltseries", params={"files": [str(stack)],
                                                          "pixel_size_a": 5.0}, executor="inline")
    rng = np.random.default_rng(2)
    particles = [Particle(name=f"TS_01/{i}", tomogram="TS_01",
                          position_a=tuple(rng.uniform(-60, 60, 3)), rotation=r.tolist())
                 for i, r in enumerate(random_rotations(4, rng))]
    dynamo.write_dynamo_table(tmp_path / "p.tbl", particles, 5.0, (32, 32, 16))
    particle_run = project.run("import.dynamo", params={
        "files": [str(tmp_path / "p.tbl")], "pixel_size_a": 5.0, "tomo_size_xyz": [32, 32, 16]},
        executor="inline")
    for target, files in EXPECTED_FILES.items():
        out = tmp_path / "export" / target
        run = project.run(f"export.{target}", inputs={"tilt_series": series_run.name,
                                                       "particles": particle_run.name},
                          params={"out_dir": str(out), "tomo_size_xyz": [32, 32, 16],
                                  **({"defocus_a": 25000.0} if target == "relion5" else {})},
                          executor="inline")
        assert run.state == "finished", target
        for name in files:
            assert (out / name).is_file(), f"{target}: {name} missing"


def test_relion5_round_trip_in_project_links_the_stack(project, tmp_path, stack_factory):
    from tomoweave.formats.mrc import read_mrc

    stack = stack_factory("TS_03", n_tilts=7, size_yx=(16, 16))
    series_run = project.run("import.tiltseries", params={"files": [str(stack)],
                                                          "pixel_size_a": 3.0}, executor="inline")
    out = tmp_path / "r5"
    project.run("export.relion5", inputs={"tilt_series": series_run.name},
                params={"out_dir": str(out), "defocus_a": 25000.0}, executor="inline")
    back = project.run("import.relion5", params={"files": [str(out / "tomograms.star")]},
                       executor="inline")
    (original,) = project.items(series_run, "tilt_series")
    (series,) = project.items(back, "tilt_series")
    assert [t.tilt_deg for t in series.tilts] == pytest.approx([t.tilt_deg for t in original.tilts])
    assert [t.image_index for t in series.tilts] == list(range(7))
    data, _ = read_mrc(project.path(series.tilts[3].image_path))
    assert np.array_equal(data, read_mrc(stack)[0])
    assert series.pixel_size_a == pytest.approx(3.0)


def test_import_relion_subtomograms(project, tmp_path):
    import pandas as pd

    from tomoweave.formats.mrc import read_mrc, write_mrc
    from tomoweave.formats.star_io import write_star_blocks

    folder = tmp_path / "relion" / "Extract" / "job010" / "Subtomograms" / "TS_01"
    rows = []
    for index in range(3):
        write_mrc(folder / f"{index + 1}_data.mrc", np.full((8, 8, 8), index, np.float32), 6.0)
        write_mrc(folder / f"{index + 1}_weights.mrc", np.ones((8, 8, 8), np.float32), 6.0)
        rows.append({"rlnTomoName": "TS_01", "rlnCoordinateX": 10.0 + index,
                     "rlnCoordinateY": 20.0, "rlnCoordinateZ": 5.0,
                     "rlnImageName": f"Extract/job010/Subtomograms/TS_01/{index + 1}_data.mrc",
                     "rlnCtfImage": f"Extract/job010/Subtomograms/TS_01/{index + 1}_weights.mrc",
                     "rlnAngleRot": 0.0, "rlnAngleTilt": 0.0, "rlnAnglePsi": 0.0})
    star = tmp_path / "relion" / "Refine3D" / "job020" / "run_data.star"
    write_star_blocks(star, {"optics": pd.DataFrame([{"rlnImagePixelSize": 6.0}]),
                             "particles": pd.DataFrame(rows)})
    run = project.run("import.relion4", params={"files": [str(star)], "pixel_size_a": 6.0,
                                                "tomo_size_xyz": [64, 64, 32]}, executor="inline")
    subtomograms = project.items(run, "subtomograms")
    assert [s.box_size_px for s in subtomograms] == [8, 8, 8]
    assert subtomograms[1].particle.position_a == pytest.approx(((11 - 32) * 6.0, (20 - 32) * 6.0,
                                                                 (5 - 16) * 6.0))
    data, pixel = read_mrc(project.path(subtomograms[2].path))
    assert data.mean() == 2.0 and pixel == pytest.approx(6.0)
    assert project.path(subtomograms[0].weight_path).is_file()
