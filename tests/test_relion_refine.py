"""relion.refine and relion.classify3d (relion_refine_mpi, Debian's RELION 3.1) on simulated
subtomograms with their 3D weights: classes that split two species; killing a relion.refine
run kills RELION's three MPI ranks.

The 3D weights here are the ±60° missing wedge. With the signed 3D CTF model as rlnCtfImage
(what relion_reconstruct --3d_rot --ctf reconstructs correctly, test_relion_plugin.py),
RELION 3.1's relion_refine assigns wrong orientations: in a one-iteration global search of 100
such boxes (15° sampling, 40 Å) the median pose error was 158-164°, also with |CTF| weights and
|CTF|-filtered boxes (63°) and with CTF-premultiplied boxes (94°), against 8° for the same boxes
with the wedge alone or no weight. Until that is understood, these tests use wedge weights
(an open point of issue 14)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from relion_data import imported_project, lowpassed, write_subtomograms

from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.sim.oracle import truth_map

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("relion_refine_mpi") is None or shutil.which("mpirun") is None,
    reason="RELION 3.1 (Debian package relion, with MPI) not installed: make test installs it")]

BOX, PIXEL_A, COUNT, PRIOR_ERROR_DEG = 32, 10.0, 100, 8.0
REFINE = {"particle_diameter_a": 300.0, "initial_lowpass_a": 40.0, "angular_step_deg": 7.5,
          "local_search_deg": 15.0, "offset_range_px": 1.0, "offset_step_px": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("relion-refine-data")
    # 3D weights: the ±60° missing wedge (see the module notes on CTF images)
    truth, rotations = write_subtomograms(folder, count=COUNT, box_px=BOX, pixel_size_a=PIXEL_A,
                                          noise=2.0, ctf=False, prior_error_deg=PRIOR_ERROR_DEG)
    project = imported_project(tmp_path_factory.mktemp("relion-refine") / "proj",
                               folder / "particles.star")
    write_mrc(folder / "start.mrc", lowpassed(truth, PIXEL_A, 60.0), PIXEL_A)
    run = project.run("import.volume", params={"files": [str(folder / "start.mrc")]},
                      executor="inline", name="start")
    assert run.state == "finished"
    return project, truth, rotations


def _relion_processes(folder: str) -> list[int]:
    """Processes running relion_refine_mpi in ``folder`` (their working directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if any(b"relion_refine_mpi" in part for part in command[:1]) and cwd.startswith(folder):
            found.append(int(entry))
    return found


def test_killing_the_run_kills_relion(data):
    project, _, _ = data
    command = [sys.executable, "-m", "tomoweave.cli", "run", "relion.refine", "-p",
               str(project.root), "--input", "subtomograms=imported.subtomograms", "--input",
               "reference=start", "--name", "killed", "--executor", "local", "--workers", "1",
               *[f"--set={k}={v}" for k, v in REFINE.items()]]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    folder = str(project.root / "runs")
    deadline = time.time() + 300
    while time.time() < deadline and len(_relion_processes(folder)) < 3:
        assert process.poll() is None, "the run ended before RELION started"
        time.sleep(0.2)
    ranks = _relion_processes(folder)
    assert len(ranks) == 3, "relion_refine_mpi did not start its 3 ranks"
    os.killpg(process.pid, signal.SIGKILL)  # the scheduler and its workers, no cleanup
    process.wait()
    deadline = time.time() + 30
    while time.time() < deadline and _relion_processes(folder):
        time.sleep(0.2)
    assert _relion_processes(folder) == [], "RELION outlived the killed run"


def test_classify3d_separates_two_species(tmp_path):
    """40 subtomograms, half a ribosome (4V4R) and half RuBisCO (1BXN), from
    one blurred mixed reference: RELION's two classes split them."""
    folder = tmp_path / "data"
    write_subtomograms(folder, count=40, box_px=BOX, pixel_size_a=PIXEL_A, noise=0.3, ctf=False,
                       templates=("4v4r", "1bxn"), prior_error_deg=4.0, seed=11)
    project = imported_project(tmp_path / "proj", folder / "particles.star")
    mixed = 0.5 * (truth_map("4v4r", BOX, PIXEL_A) + truth_map("1bxn", BOX, PIXEL_A))
    write_mrc(folder / "mixed.mrc", lowpassed(mixed, PIXEL_A, 60.0), PIXEL_A)
    assert project.run("import.volume", params={"files": [str(folder / "mixed.mrc")]},
                       executor="inline", name="mixed").state == "finished"
    run = project.run("relion.classify3d", inputs={"subtomograms": "imported.subtomograms",
                                                   "reference": "mixed"},
                      params={**REFINE, "classes": 2, "iterations": 4, "local_search_deg": 12.0},
                      executor="inline", name="classes")
    assert run.state == "finished", run.record.error
    (classes,) = project.items(run, "classes")
    assert sum(classes.class_sizes) == 40 and len(classes.class_paths) == 2
    species = np.arange(40) % 2
    found = np.array([p.class_id for p in project.items(run, "particles")])
    agreement = max(np.mean(found - 1 == species), np.mean(found - 1 != species))
    print(f"relion.classify3d: sizes {classes.class_sizes}, {100 * agreement:.0f} % assigned "
          f"to their species' class")
    assert agreement >= 0.9
    for path in classes.class_paths:
        assert read_mrc(project.root / path)[0].shape == (BOX,) * 3

