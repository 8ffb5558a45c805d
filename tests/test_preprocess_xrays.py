"""X-ray eraser, exposure filter and their tilt-series protocols."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tomoweave.algorithms.preprocess import (
    critical_exposure_e_a2,
    dose_filter_image,
    erase_xrays,
    exposure_weights,
)
from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc, write_mrc


def _noisy_specimen(rng, size=512, noise_sd=1.0, with_truth=False):
    structure = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3) * 40.0 + 100.0
    noisy = (structure + rng.normal(0, noise_sd, (size, size))).astype(np.float32)
    return (noisy, structure) if with_truth else noisy


def _plant_hot_pixels(rng, image, count=300):
    flat = rng.choice(image.size, size=count, replace=False)
    ys, xs = np.unravel_index(flat, image.shape)
    planted = np.zeros(image.shape, dtype=bool)
    planted[ys, xs] = True
    pairs = rng.random(count) < 0.3  # some X-rays hit two neighbouring pixels
    planted[ys[pairs], np.minimum(xs[pairs] + 1, image.shape[1] - 1)] = True
    damaged = image.copy()
    damaged[planted] += rng.uniform(10.0, 60.0, planted.sum())
    return damaged, planted


def test_eraser_finds_planted_hot_pixels_and_leaves_the_rest_alone():
    rng = np.random.default_rng(0)
    clean, noise_free = _noisy_specimen(rng, with_truth=True)  # noise SD 1.0
    damaged, planted = _plant_hot_pixels(rng, clean)
    erased, mask = erase_xrays(damaged)
    recall = (mask & planted).sum() / planted.sum()
    assert recall >= 0.95, recall
    others = ~planted
    changed = others & (erased != damaged)
    assert changed.sum() <= 1e-4 * others.sum()
    # the rare other pixel touched ends no further from the noise-free value than noise allows
    worse = np.abs(erased - noise_free)[changed] - np.abs(damaged - noise_free)[changed]
    assert (worse <= 1.0).all(), worse
    # erased pixels are back within the noise of their true value
    assert np.abs(erased - noise_free)[planted].max() < 4.0


def test_exposure_filter_follows_the_critical_exposure_curve():
    assert np.isclose(critical_exposure_e_a2(np.array([0.1]))[0], 0.245 * 0.1**-1.665 + 2.81)
    weights = exposure_weights((64, 64), 2.0, 20.0)
    k = np.fft.rfftfreq(64, d=2.0)[10]
    assert np.isclose(weights[0, 10], np.exp(-20.0 / (2 * critical_exposure_e_a2(k))), rtol=1e-5)
    image = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    assert np.allclose(dose_filter_image(image, 2.0, 0.0), image, atol=1e-5)
    filtered = dose_filter_image(image, 2.0, 60.0)
    assert filtered.std() < 0.8 * image.std() and np.isclose(filtered.mean(), image.mean(),
                                                             atol=1e-5)


def test_erase_and_dose_filter_protocols_keep_every_tilt_and_its_metadata(tmp_path):
    rng = np.random.default_rng(2)
    stack, planted = [], []
    for _ in range(5):
        damaged, hot = _plant_hot_pixels(rng, _noisy_specimen(rng, 128), 20)
        stack.append(damaged)
        planted.append(hot)
    path = write_mrc(tmp_path / "data" / "TS_01.mrc", np.stack(stack), 2.0, stack=True)
    path.with_suffix(".tlt").write_text("-40\n-20\n0\n20\n40\n")
    project = Project.init(tmp_path / "project")
    imported = project.run("import.tiltseries", params={
        "files": [str(path)], "dose_per_tilt_e_a2": 4.0}, executor="inline")
    erased = project.run("tiltseries.erase_xrays", inputs={"tilt_series": imported.name},
                         executor="inline")
    (series,) = project.items(erased)
    assert [t.tilt_deg for t in series.tilts] == [-40, -20, 0, 20, 40]
    cleaned, _ = read_mrc(project.path(series.tilts[0].image_path))
    for index, tilt in enumerate(series.tilts):
        residual = cleaned[tilt.image_index] - stack[index]
        assert (residual[planted[index]] < -5).mean() >= 0.95
    filtered = project.run("tiltseries.dose_filter", inputs={"tilt_series": erased.name},
                           executor="inline")
    (dosed,) = project.items(filtered)
    images, _ = read_mrc(project.path(dosed.tilts[0].image_path))
    by_exposure = sorted(dosed.tilts, key=lambda t: t.pre_exposure_e_a2)
    first, last = (images[t.image_index] for t in (by_exposure[0], by_exposure[-1]))
    raw_first, raw_last = (cleaned[t.image_index] for t in (by_exposure[0], by_exposure[-1]))
    # the last tilt exposed loses more of its high frequencies than the first
    assert np.std(last - raw_last) > 2 * np.std(first - raw_first)
    assert [t.tilt_deg for t in dosed.tilts] == [t.tilt_deg for t in series.tilts]


def test_a_tilt_with_nan_pixels_fails_its_series_and_the_others_go_on(tmp_path):
    import mrcfile

    rng = np.random.default_rng(4)
    for name in ("TS_01", "TS_02"):
        stack = np.stack([_noisy_specimen(rng, 64) for _ in range(3)])
        path = write_mrc(tmp_path / "data" / f"{name}.mrc", stack, 2.0, stack=True)
        path.with_suffix(".tlt").write_text("-20\n0\n20\n")
    with mrcfile.open(tmp_path / "data" / "TS_02.mrc", mode="r+") as mrc:
        mrc.data[1, 10:20, 10:20] = np.nan  # a corrupted read-out
    project = Project.init(tmp_path / "project")
    imported = project.run("import.tiltseries", params={
        "files": [str(tmp_path / "data" / "TS_*.mrc")]}, executor="inline")
    run = project.run("tiltseries.erase_xrays", inputs={"tilt_series": imported.name},
                      executor="inline")
    assert run.state == "finished with failures"
    assert [s.name for s in project.items(run)] == ["TS_01"]
    error = project.catalog.journal(run.id)["TS_02"]["error"]
    assert "TS_02.mrc" in error and "NaN" in error and "tilt 0°" in error


def test_eraser_removes_the_simulators_xray_hits(tmp_path):
    from tomoweave.sim import simulate_dataset

    dataset = simulate_dataset(tmp_path / "sim", preset="tiny", seed=5, xrays_per_tilt=6)
    truth = dataset.series[0].truth()
    project = Project.init(tmp_path / "project")
    imported = project.run("import.mdoc", params={"files": [str(dataset.series[0].mdoc_path)]},
                           executor="inline")
    erased = project.run("tiltseries.erase_xrays", inputs={"tilt_series": imported.name},
                         executor="inline")
    (series,) = project.items(erased)
    before, _ = read_mrc(dataset.series[0].stack_path)
    after, _ = read_mrc(project.path(series.tilts[0].image_path))
    found = total = changed_elsewhere = 0
    for tilt in series.tilts:
        true_tilt = min(truth.tilts, key=lambda t: abs(t.nominal_tilt_deg - tilt.tilt_deg))
        raw, clean = before[true_tilt.stack_index], after[tilt.image_index]
        for x, y in true_tilt.xrays_px:
            total += 1
            found += clean[y, x] < raw[y, x] - 0.5 * (raw[y, x] - np.median(raw))
        hits = np.zeros(raw.shape, dtype=bool)
        hits[tuple(np.array(true_tilt.xrays_px)[:, ::-1].T)] = True
        changed_elsewhere += int(((clean != raw) & ~hits).sum())
    assert total >= 60 and found / total >= 0.95, (found, total)
    assert changed_elsewhere <= 0.001 * before.size, changed_elsewhere
