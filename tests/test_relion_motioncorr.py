"""relion.motioncorr (relion_run_motioncorr --use_own, Debian's RELION 3.1) on simulated tilt
movies: RELION's drift against the simulator's true drift, and the aligned sums."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import simulate_dataset

pytestmark = pytest.mark.skipif(
    shutil.which("relion_run_motioncorr") is None,
    reason="RELION 3.1 (Debian package relion) not installed: make test installs it")


def _correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def corrected(tmp_path_factory):
    root = tmp_path_factory.mktemp("relion-motion")
    dataset = simulate_dataset(root / "sim", preset="test", seed=2, movies_on=True,
                               tilt_step_deg=20.0)
    project = Project.init(root / "project")
    imported = project.run("import.mdoc", params={
        "files": [str(s.mdoc_path) for s in dataset.series],
        "frames_dir": str(dataset.out_dir / "frames")}, executor="inline")
    run = project.run("relion.motioncorr", inputs={"tilt_series": imported.name},
                      executor="inline")
    return project, run, dataset


def test_relion_drift_matches_the_truth(corrected):
    project, run, dataset = corrected
    assert run.state == "finished", run.record.error
    (series,) = project.items(run)
    truth = dataset.series[0].truth()
    noise_free, _ = read_mrc(dataset.series[0].noise_free_path)
    errors, uncorrected = [], []
    for tilt in series.tilts:
        true_tilt = min(truth.tilts, key=lambda t: abs(t.nominal_tilt_deg - tilt.tilt_deg))
        error = np.array(tilt.drift_px) - np.array(true_tilt.drift_px)
        error -= error.mean(axis=0)  # the reference position of a movie is arbitrary
        errors.append(np.mean(np.sum(error**2, axis=1)))
        still = np.array(true_tilt.drift_px) - np.mean(true_tilt.drift_px, axis=0)
        uncorrected.append(np.mean(np.sum(still**2, axis=1)))
        corrected_sum, _ = read_mrc(project.path(tilt.image_path))
        frames, _ = read_mrc(dataset.out_dir / "frames" / true_tilt.movie_file)
        clean = noise_free[true_tilt.stack_index]
        assert _correlation(corrected_sum[tilt.image_index], clean) > _correlation(
            frames.sum(axis=0), clean), tilt.tilt_deg
    rms_px = float(np.sqrt(np.mean(errors)))
    still_px = float(np.sqrt(np.mean(uncorrected)))
    print(f"RELION motion correction: drift error {rms_px:.3f} px rms (drift {still_px:.2f} px)")
    # RELION's own implementation measured 0.30 px rms on these movies (motion.correct: 0.1);
    # no correction leaves the whole drift (~1 px rms), the opposite sign twice that
    assert rms_px <= 0.45 and rms_px < 0.4 * still_px, (rms_px, still_px)
    commands = run.record.provenance["commands"]
    assert len(commands) == len(series.tilts)
    assert all(c["programs"][0]["name"] == "relion_run_motioncorr"
               and c["programs"][0]["version"].startswith("3.1") for c in commands)
    assert "--use_own" in commands[0]["command"].split()
