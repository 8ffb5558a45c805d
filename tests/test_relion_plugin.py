"""The RELION plugin run for real (Debian's RELION 3.1): relion.reconstruct (with the command
line, RELION's path and version in the provenance and RELION's output in the run log) and
relion.postprocess parsed into an Average."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from relion_data import imported_project, write_subtomograms

from tomoweave.algorithms.fourier import fourier_shell_correlation
from tomoweave.formats.mrc import read_mrc
from tomoweave.formats.relion_results import POSTPROCESS_CURVES
from tomoweave.formats.star_io import read_star_blocks

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


def test_postprocess_is_parsed_into_an_average(data):
    project, truth, _ = data
    halves = project.run("test.oracle_average", inputs={"subtomograms": "imported.subtomograms"},
                         executor="inline", name="oracle")
    assert halves.state == "finished", halves.record.error
    run = project.run("relion.postprocess", inputs={"average": "oracle"}, executor="inline",
                      params={"mask_diameter_a": 300.0}, name="relion-post")
    assert run.state == "finished", run.record.error
    (average,) = project.items(run, "average")
    star = read_star_blocks(project.root / run.folder / "work" / "oracle" / "post"
                            / "postprocess.star")
    table = star["fsc"]
    # the Average holds what RELION wrote: resolution and every shell of every curve
    assert average.resolution_a == pytest.approx(float(star["general"]["rlnFinalResolution"]))
    assert [s.shell for s in average.fsc] == table["rlnSpectralIndex"].tolist()
    for field, column in POSTPROCESS_CURVES.items():
        assert [getattr(s, field) for s in average.fsc] == pytest.approx(
            table[column].tolist(), abs=1e-6), field
    assert average.fsc[3].resolution_a == pytest.approx(BOX * PIXEL_A / 3, rel=1e-4)
    # RELION's unmasked FSC is the FSC of the two half maps: tomoweave's computes the same
    half1, _ = read_mrc(project.root / average.half1_path)
    half2, _ = read_mrc(project.root / average.half2_path)
    ours = fourier_shell_correlation(half1, half2)
    relion = np.array([s.fsc_unmasked for s in average.fsc])
    assert np.max(np.abs(ours[1:len(relion)] - relion[1:])) < 0.02
    # 20 particles a half at 5 % noise: the halves agree beyond 40 Å (4 px at 10 Å: the
    # resolution is bounded by Nyquist, 20 Å, and by the lost CTF shells)
    assert 2 * PIXEL_A <= average.resolution_a < 40.0
    sharpened, pixel = read_mrc(project.root / average.path)
    assert pixel == pytest.approx(PIXEL_A) and _correlation(sharpened, truth) > 0.7
    mask, _ = read_mrc(project.root / average.mask_path)
    assert 0.05 < mask.mean() < 0.6 and mask.max() == pytest.approx(1.0, abs=1e-3)
