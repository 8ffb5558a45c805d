"""ctf.estimate -> ctf.assess -> tiltseries.exclude_views through the project API, on a tilt
series made with known per-tilt defoci (three of them off by 30 %), plus the rules alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_ctf_estimation import simulate_ctf_image

from tomoweave.algorithms.ctf_assessment import apply_overrides, assess_ctf
from tomoweave.api import Project
from tomoweave.formats.mrc import write_mrc

ANGLES = [-60.0, -48.0, -36.0, -24.0, -12.0, 0.0, 12.0, 24.0, 36.0, 48.0, 60.0]
WRONG = {2: 1.3, 6: 0.7, 9: 1.3}  # tilt index -> factor on the true defocus
PIXEL_SIZE_A = 3.0


def _series_stack(path, defoci, seed=0):
    images = [simulate_ctf_image(256, PIXEL_SIZE_A, d + 300, d - 300, 40.0, angle, 85.0,
                                 seed=seed + i, signal_to_noise=0.5)
              for i, (d, angle) in enumerate(zip(defoci, ANGLES, strict=True))]
    write_mrc(path, np.stack(images), PIXEL_SIZE_A, stack=True)
    path.with_suffix(".tlt").write_text("".join(f"{a:.2f}\n" for a in ANGLES))
    return path


@pytest.fixture(scope="module")
def ctf_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctf")
    rng = np.random.default_rng(1)
    base = 30000.0 + rng.normal(0, 500.0, len(ANGLES))
    truth = np.array([d * WRONG.get(i, 1.0) for i, d in enumerate(base)])
    _series_stack(root / "data" / "TS_01.mrc", truth)
    bad = root / "data" / "TS_02.mrc"
    _series_stack(bad, base, seed=50)
    import mrcfile
    with mrcfile.open(bad, mode="r+") as mrc:  # a tilt lost in transfer: all zeros
        mrc.data[4] = 0
    project = Project.init(root / "project")
    imported = project.run("import.tiltseries", params={
        "files": [str(root / "data" / "TS_*.mrc")], "pixel_size_a": PIXEL_SIZE_A,
        "tilt_axis_deg": 85.0, "dose_per_tilt_e_a2": 3.0}, executor="inline")
    assert imported.state == "finished"
    estimated = project.run("ctf.estimate", inputs={"tilt_series": imported.name},
                            params={"tile_px": 128}, executor="inline")
    return project, estimated, truth


def test_ctf_estimate_recovers_every_tilt_and_fails_the_series_with_an_empty_tilt(ctf_project):
    project, estimated, truth = ctf_project
    assert estimated.state == "finished with failures"
    journal = project.catalog.journal(estimated.id)
    assert journal["TS_02"]["state"] == "failed"
    assert "all zeros" in journal["TS_02"]["error"] and "TS_02" in journal["TS_02"]["error"]
    (series,) = project.items(estimated, "tilt_series")
    assert series.name == "TS_01"
    for tilt, expected in zip(series.tilts, truth, strict=True):
        mean = 0.5 * (tilt.ctf.defocus_u_a + tilt.ctf.defocus_v_a)
        assert abs(mean / expected - 1) <= 0.05, (tilt.tilt_deg, mean, expected)
    assert project.path(series.tilts[0].ctf.diagnostic_path).stat().st_size > 10_000
    record = series.to_record()["tilts"][0]  # what `show --json` prints per tilt
    for key in ("defocus_u_a", "defocus_v_a", "astigmatism_angle_deg", "fit_resolution_a"):
        assert isinstance(record[key], float)


def test_ctf_assess_flags_exactly_the_three_wrong_tilts_and_splits_the_series(ctf_project):
    project, estimated, _ = ctf_project
    assessed = project.run("ctf.assess", inputs={"tilt_series": estimated.name},
                           executor="inline")
    assert assessed.state == "finished"
    (good,) = project.items(assessed, "good")
    (bad,) = project.items(assessed, "bad")
    assert sorted(t.tilt_deg for t in bad.tilts) == sorted(ANGLES[i] for i in WRONG)
    assert [t.tilt_deg for t in good.tilts] == [a for i, a in enumerate(ANGLES) if i not in WRONG]
    # metadata travel with their tilts: each good tilt still points at its own slice and CTF
    for tilt in good.tilts:
        assert tilt.image_index == ANGLES.index(tilt.tilt_deg)
    assert (project.root / assessed.folder / "outputs" / "TS_01_ctf_assess.png").stat().st_size \
        > 10_000
    overridden = project.run("ctf.assess", inputs={"tilt_series": estimated.name},
                             params={"keep_tilts": [ANGLES[6]], "drop_tilts": [0]},
                             executor="inline")
    (bad,) = project.items(overridden, "bad")
    assert sorted(t.tilt_deg for t in bad.tilts) == sorted([ANGLES[2], ANGLES[9], 0.0])
    excluded = project.run("tiltseries.exclude_views", inputs={"tilt_series": estimated.name},
                           params={"ctf_flags": True, "tilts": [60.0], "mode": "mark"},
                           executor="inline")
    (marked,) = project.items(excluded)
    assert [t.tilt_deg for t in marked.tilts if t.excluded] == sorted(
        [ANGLES[i] for i in WRONG] + [60.0])
    assert all(t.ctf is not None for t in marked.tilts)
    json.dumps(marked.to_record())


def test_rules_use_the_mean_of_the_unflagged_tilts():
    rng = np.random.default_rng(3)
    u = 30000.0 + rng.normal(0, 600.0, 11)
    u[[1, 5, 8]] *= [1.3, 1.3, 0.7]
    verdict = assess_ctf(u, u - 500.0, [8.0] * 11)
    assert np.nonzero(verdict.flagged)[0].tolist() == [1, 5, 8]
    poor = assess_ctf(u, u - 500.0, [8.0] * 10 + [40.0], max_fit_resolution_a=20.0)
    assert np.nonzero(poor.flagged)[0].tolist() == [1, 5, 8, 10]
    assert "fit resolution" in poor.reasons[10][0]
    kept = apply_overrides(verdict, np.arange(11) * 10.0 - 50, keep=[1], drop=[3], by="index")
    assert np.nonzero(kept.flagged)[0].tolist() == [3, 5, 8]
    unfit = assess_ctf(u, u - 500.0, [8.0] * 11, reliable=[i != 4 for i in range(11)])
    assert np.nonzero(unfit.flagged)[0].tolist() == [1, 4, 5, 8]  # no Thon rings: flagged
    assert unfit.reasons[4] == ["no usable Thon rings (the defocus is not a fit)"]
    assert unfit.mean_defocus_u_a == pytest.approx(np.delete(u, [1, 4, 5, 8]).mean())
    nowhere = assess_ctf(u, u - 500.0, [8.0] * 11, reliable=[False] * 11)  # too coarse for rings
    assert np.nonzero(nowhere.flagged)[0].tolist() == [1, 5, 8]  # judged as if all were fits
    with pytest.raises(ValueError, match="no tilt at 7"):
        apply_overrides(verdict, np.arange(11) * 10.0 - 50, keep=[7.0])


def test_a_single_micrograph_imported_as_a_one_tilt_series_gets_its_ctf(tmp_path):
    image = simulate_ctf_image(512, PIXEL_SIZE_A, 22600.0, 21400.0, 120.0, seed=21)
    path = write_mrc(tmp_path / "data" / "mic_001.mrc", image, PIXEL_SIZE_A)
    path.with_suffix(".tlt").write_text("0.0\n")
    project = Project.init(tmp_path / "project")
    imported = project.run("import.tiltseries", params={"files": [str(path)]}, executor="inline")
    estimated = project.run("ctf.estimate", inputs={"tilt_series": imported.name},
                            executor="inline")
    assert estimated.state == "finished"
    ((tilt,),) = [s.tilts for s in project.items(estimated)]
    assert abs(tilt.ctf.defocus_u_a / 22600.0 - 1) <= 0.02
    assert abs(tilt.ctf.defocus_v_a / 21400.0 - 1) <= 0.02
