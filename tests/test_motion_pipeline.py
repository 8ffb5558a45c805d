"""The first half of the pipeline through the project API: simulate (with movies) ->
motion.correct -> ctf.estimate -> ctf.assess -> tiltseries.exclude_views / dose_filter."""

from __future__ import annotations

import numpy as np

from tomoweave.api import Project


def test_simulated_movies_run_through_motion_ctf_and_the_assistant(tmp_path):
    project = Project.init(tmp_path / "project")
    sim = project.run("simulate", params={"preset": "tiny", "movies_on": True, "seed": 3},
                      executor="inline")
    motion = project.run("motion.correct", inputs={"tilt_series": sim.name}, executor="inline")
    assert motion.state == "finished"
    (corrected,) = project.items(motion)
    assert all(t.drift_px and len(t.drift_px) == t.frame_count for t in corrected.tilts)
    assert all(t.image_path and t.even_path and t.odd_path for t in corrected.tilts)

    ctf = project.run("ctf.estimate", inputs={"tilt_series": motion.name}, executor="inline")
    assert ctf.state == "finished"
    (estimated,) = project.items(ctf)
    records = estimated.to_record()["tilts"]
    assert len(records) == len(corrected.tilts)
    for record in records:
        assert record["defocus_u_a"] > 0 and record["defocus_v_a"] > 0
        assert record["fit_resolution_a"] is not None
    # 16 Å/px leaves no Thon ring to fit: every tilt falls back to the nominal defocus, and the
    # log says so rather than reporting noise as a measurement
    nominal = estimated.tilts[0].nominal_defocus_a
    assert all(np.isclose(t.ctf.defocus_u_a, nominal) for t in estimated.tilts)
    log = (project.root / ctf.folder / "logs" / "run.log").read_text()
    assert "no usable Thon rings" in log
    assert project.path(estimated.tilts[0].ctf.diagnostic_path).exists()

    assess = project.run("ctf.assess", inputs={"tilt_series": ctf.name},
                         params={"drop_tilts": [0, 1], "by": "index"}, executor="inline")
    (good,) = project.items(assess, "good")
    (bad,) = project.items(assess, "bad")
    assert len(good.tilts) == len(estimated.tilts) - 2 and len(bad.tilts) == 2
    assert {t.tilt_deg for t in bad.tilts} == {t.tilt_deg for t in estimated.tilts[:2]}

    filtered = project.run("tiltseries.dose_filter", inputs={"tilt_series": f"{assess.name}.good"},
                           executor="inline")
    (dosed,) = project.items(filtered)
    assert [t.tilt_deg for t in dosed.tilts] == [t.tilt_deg for t in good.tilts]
    assert all(t.ctf == g.ctf for t, g in zip(dosed.tilts, good.tilts, strict=True))
