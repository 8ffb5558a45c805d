"""The RELION plugin run for real (Debian's RELION 3.1): relion.reconstruct, with the command
line, RELION's path and version in the provenance and RELION's output in the run log."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from relion_data import imported_project, write_subtomograms

from tomoweave.formats.mrc import read_mrc

pytestmark = pytest.mark.skipif(
    shutil.which("relion_reconstruct") is None,
    reason="RELION 3.1 (Debian package relion) not installed: make test installs it")

BOX, PIXEL_A = 32, 10.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("relion-data")
    truth, rotations = write_subtomograms(folder, count=40, box_px=BOX, pixel_size_a=PIXEL_A,
                                          noise=0.05)
    project = imported_project(tmp_path_factory.mktemp("relion-project") / "proj",
                               folder / "particles.star")
    return project, truth, rotations


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_reconstruct_from_poses_gives_the_truth_and_records_relion(data):
    project, truth, _ = data
    run = project.run("relion.reconstruct", inputs={"subtomograms": "imported.subtomograms"},
                      executor="inline", name="relion-rec")
    assert run.state == "finished", run.record.error
    (volume,) = project.items(run, "maps")
    relion_map, pixel = read_mrc(project.root / volume.path)
    assert pixel == pytest.approx(PIXEL_A) and volume.size_xyz == (BOX,) * 3
    # 5 % noise, 40 particles with CTF zeros spread over 2-4 µm: the ribosome, up to the
    # shells every CTF loses (the same bound test_relion31_subtomograms holds RELION to)
    assert _correlation(relion_map, truth) > 0.85
    (command,) = run.record.provenance["commands"]
    relion = shutil.which("relion_reconstruct")
    assert command["command"].startswith(f"{relion} --i particles.star --o reconstruction.mrc "
                                         f"--3d_rot --sym C1 --angpix 10 --ctf")
    assert command["programs"] == [{"name": "relion_reconstruct", "family": "RELION",
                                    "path": relion, "version": command["programs"][0]["version"]}]
    assert command["programs"][0]["version"].startswith("3.1")  # Debian's RELION 3.1
    assert command["exit_code"] == 0
    log = (project.root / run.folder / "logs" / "run.log").read_text()
    assert "[relion_reconstruct]" in log
