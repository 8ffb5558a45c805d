"""What tomoweave exports, run through the real RELION 5.1 (Debian sid's package, in a chroot).

One simulated project (a tilt series with a non-trivial alignment and a per-tilt CTF, its
tomoweave tomogram and the true ribosome positions and poses) is exported with export.relion5;
RELION 5 then reconstructs the tomogram (relion_tomo_reconstruct_tomogram), averages the
particles (relion_tomo_reconstruct_particle) and extracts them (relion_tomo_subtomo), each run
from the export folder, which is what a RELION user does. The tests compare RELION's results with
tomoweave's tomogram and with the simulation's truth, and import RELION's own output files back.

The simulation and the RELION runs happen once per session (a file lock shares them between
pytest-xdist workers); without root or without the chroot the tests are skipped with the reason
(`make relion5` builds the chroot; `make test` does when it can).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
from relion5_chroot import host_mounts_under, relion5_unavailable, relion5_version, run_relion5

from tomoweave.algorithms.comparison import (
    band_limit,
    compare_volumes,
    mirror_volume,
    remove_radial_average,
)
from tomoweave.algorithms.volumes import crop_or_pad, spherical_mask
from tomoweave.api import Project
from tomoweave.formats import ctffind, imod
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry import rotation_angle_between_deg
from tomoweave.sim import load_truth
from tomoweave.sim.templates import load_template

TEMPLATE = "4v4r"  # the 70S ribosome: large and chiral, so a 10 Å average shows its hand
SIMULATION = {"preset": "test", "seed": 3, "image_size_px": 160, "thickness_a": 800.0,
              "tilt_step_deg": 4.0, "membranes_on": False, "exclude_templates": ["1bxn", "3j9i"]}
BINNING = 2  # tomoweave's and RELION's tomograms: 20 Å voxels
BOX_PX = 48  # RELION's average: 480 Å at the tilt series' 10 Å


def _shared_folder(tmp_path_factory) -> Path:
    """One folder for the whole session, the same for every xdist worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "relion5_round_trip"


@pytest.fixture(scope="session")
def relion5(tmp_path_factory) -> dict:
    """The simulated project, its export and RELION 5's runs on it (see the module docstring)."""
    reason = relion5_unavailable()
    if reason:
        pytest.skip(reason)
    folder = _shared_folder(tmp_path_factory)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / "relion5_round_trip.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = folder / "summary.json"
        if not summary.is_file():
            _build(folder, summary)
    result = json.loads(summary.read_text())
    assert not host_mounts_under(), "mounts left in the RELION 5 chroot"
    return result


def _build(folder: Path, summary: Path) -> None:
    project = Project.init(folder / "project")
    simulated = project.run("simulate", params=SIMULATION, executor="inline")
    (series,) = project.items(simulated, "tilt_series")
    truth = load_truth(project.path(series.mdoc_path).parent / "truth" / f"{series.name}.json")
    aligned = _import_true_alignment(project, simulated.name, truth, folder / "truth_files")
    with_ctf = project.run("import.ctffind", inputs={"tilt_series": aligned},
                           params={"files": [str(folder / "truth_files" / "TS_01_CTF.txt")]},
                           executor="inline")
    wbp = project.run("reconstruct.wbp", inputs={"tilt_series": with_ctf.name},
                      params={"binning": BINNING, "thickness_a": truth.thickness_a},
                      executor="inline")
    export = folder / "relion"
    project.run("export.relion5", inputs={"tilt_series": with_ctf.name,
                                          "particles": f"{simulated.name}.true_particles",
                                          "tomograms": wbp.name},
                params={"out_dir": str(export)}, executor="inline")
    no_ctf = folder / "relion_nominal_defocus"
    project.run("export.relion5", inputs={"tilt_series": aligned},
                params={"out_dir": str(no_ctf)}, executor="inline")
    (tomogram,) = project.items(wbp)
    size = [str(int(n * tomogram.binning)) for n in tomogram.size_xyz]  # RELION: unbinned
    tomogram_box = ["--w", size[0], "--h", size[1], "--d", size[2]]
    runs = {
        "tomogram": (export, ["relion_tomo_reconstruct_tomogram", "--t", "tomograms.star",
                              "--o", "rec/", "--bin", str(BINNING), *tomogram_box, "--j", "2"]),
        "average": (export, ["relion_tomo_reconstruct_particle", "--i", "optimisation_set.star",
                             "--o", "average/", "--b", str(BOX_PX), "--bin", "1", "--j", "2",
                             "--j_in", "1", "--j_out", "2"]),
        "subtomo": (export, ["relion_tomo_subtomo", "--i", "optimisation_set.star",
                             "--o", "subtomo/", "--b", str(BOX_PX), "--bin", "1", "--j", "2"]),
        "nominal_defocus": (no_ctf, ["relion_tomo_reconstruct_tomogram", "--t",
                                     "tomograms.star", "--o", "rec/", "--bin", str(BINNING),
                                     *tomogram_box, "--j", "2"]),
    }
    results = {}
    for name, (cwd, command) in runs.items():
        result = run_relion5(command, share=folder, cwd=cwd, log=folder / f"{name}.log")
        results[name] = {"returncode": result.returncode, "error": result.error,
                         "command": " ".join(command)}
    summary.write_text(json.dumps({
        "project": str(folder / "project"), "export": str(export), "no_ctf": str(no_ctf),
        "truth": str(project.path(series.mdoc_path).parent / "truth" / f"{series.name}.json"),
        "tomogram": str(project.path(tomogram.path)), "runs": results,
        "exported_series": with_ctf.name, "particles": f"{simulated.name}.true_particles",
        "relion": relion5_version()}, indent=1))


def _import_true_alignment(project: Project, series_run: str, truth, folder: Path) -> str:
    """The simulation's alignment and CTF written as IMOD/CTFFIND files and imported (so the
    exported series carries them as a user's would)."""
    folder.mkdir(parents=True, exist_ok=True)
    alignments = truth.tilt_alignments()
    imod.write_xf(folder / "TS_01.xf", imod.alignments_to_xf(alignments, truth.pixel_size_a))
    imod.write_tilt_angles(folder / "TS_01.tlt", [a.y_tilt_deg for a in alignments])
    imod.write_tilt_angles(folder / "TS_01.xtilt", [a.x_tilt_deg for a in alignments])
    ctffind.write_ctffind_txt(folder / "TS_01_CTF.txt", truth.ctf_tilts())
    run = project.run("import.imod", inputs={"tilt_series": series_run},
                      params={"files": [str(folder / "TS_01.xf")]}, executor="inline")
    return run.name


def _accepted(relion5: dict, run: str) -> None:
    result = relion5["runs"][run]
    assert result["returncode"] == 0, (f"{relion5['relion']} refused the export: "
                                       f"{result['command']}: {result['error']}")


def test_relion5_reconstructs_the_exported_series_into_tomoweaves_tomogram(relion5):
    _accepted(relion5, "tomogram")
    ours, our_pixel_a = read_mrc(relion5["tomogram"])
    theirs, their_pixel_a = read_mrc(Path(relion5["export"]) / "rec" / "tomograms" /
                                     "rec_TS_01.mrc")
    assert theirs.shape == ours.shape and their_pixel_a == pytest.approx(our_pixel_a)
    agreement = compare_volumes(ours, theirs, fraction_of_nyquist=0.45)
    assert agreement.correlation >= 0.8, agreement
    assert np.abs(agreement.shift_voxels_xyz).max() <= 1.0, agreement
    assert not agreement.flipped, agreement


def test_relion5_averages_the_exported_particles_into_the_template(relion5):
    """RELION's average of the true poses is the ribosome, not its mirror image (hand, angles and
    positions exported right), compared on the non-spherical part (a blob matches anything)."""
    _accepted(relion5, "average")
    average, pixel_a = read_mrc(Path(relion5["export"]) / "average" / "merged.mrc")
    template = load_template(TEMPLATE, pixel_a)
    assert template.pixel_size_a == pytest.approx(pixel_a)
    truth = crop_or_pad(template.density, average.shape[0])
    mask = spherical_mask(average.shape[0], template.radius_a / pixel_a + 2.0, soft_px=3.0)

    def correlation(reference: np.ndarray) -> float:
        a = remove_radial_average(band_limit(average, 0.45)) * mask
        b = remove_radial_average(band_limit(reference, 0.45)) * mask
        return float(np.dot(a.ravel(), b.ravel()) / np.sqrt(np.dot(a.ravel(), a.ravel())
                                                              * np.dot(b.ravel(), b.ravel())))

    true_hand = correlation(truth)
    mirrored = max(correlation(mirror_volume(truth, axis)) for axis in "xyz")
    assert true_hand >= 0.5, (true_hand, mirrored)
    assert mirrored < true_hand - 0.2, (true_hand, mirrored)


def test_relion5_loads_a_series_without_ctf_estimate(relion5):
    """Without a CTF estimate the export writes the nominal defocus, which RELION needs."""
    _accepted(relion5, "nominal_defocus")
    assert (Path(relion5["no_ctf"]) / "rec" / "tomograms" / "rec_TS_01.mrc").is_file()


def test_relion5_own_tomograms_star_imports_back(relion5):
    _accepted(relion5, "tomogram")
    project = Project.open(relion5["project"])
    run = project.run("import.relion5", params={
        "files": [str(Path(relion5["export"]) / "rec" / "tomograms.star")]}, executor="inline")
    (series,) = project.items(run, "tilt_series")
    (tomogram,) = project.items(run, "tomograms")
    (exported,) = project.items(project.get_run(relion5["exported_series"]), "tilt_series")
    for tilt, original in zip(series.tilts, exported.tilts, strict=True):
        for field in ("x_tilt_deg", "y_tilt_deg", "z_rot_deg", "shift_x_a", "shift_y_a"):
            # RELION writes 6 decimals, 5 for negative numbers ("-3.44793")
            assert getattr(tilt.alignment, field) == pytest.approx(
                getattr(original.alignment, field), abs=5.01e-6), field
    assert [t.ctf.defocus_u_a for t in series.tilts] == pytest.approx(
        [t.ctf.defocus_u_a for t in exported.tilts])
    stack, _ = read_mrc(project.path(series.tilts[5].image_path))
    original, _ = read_mrc(project.path(exported.tilts[5].image_path))
    assert np.array_equal(stack, original)
    volume, pixel_a = read_mrc(project.path(tomogram.path))
    assert tomogram.binning == BINNING and tomogram.pixel_size_a == pytest.approx(pixel_a)
    assert tomogram.size_xyz == volume.shape[::-1]


def test_relion5_own_particles_and_subtomograms_import_back(relion5):
    _accepted(relion5, "subtomo")
    project = Project.open(relion5["project"])
    run = project.run("import.relion5", params={
        "files": [str(Path(relion5["export"]) / "subtomo" / "optimisation_set.star")]},
        executor="inline")
    particles = {p.name: p for p in project.items(run, "particles")}
    originals = project.items(project.get_run(relion5["particles"].split(".")[0]),
                              "true_particles")
    assert sorted(particles) == sorted(p.name for p in originals)
    for original in originals:
        back = particles[original.name]
        assert np.abs(np.subtract(back.position_a, original.position_a)).max() < 1e-3
        assert rotation_angle_between_deg(back.rotation_matrix, original.rotation_matrix) < 1e-3
    subtomograms = project.items(run, "subtomograms")
    assert len(subtomograms) == len(originals)
    assert {s.box_size_px for s in subtomograms} == {BOX_PX}
    assert all(project.path(s.path).is_file() and project.path(s.weight_path).is_file()
               for s in subtomograms)
