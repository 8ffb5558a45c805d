"""motion.correct against the simulator's ground truth, through the project API."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from tomoweave.algorithms.motion import correct_motion, shift_image
from tomoweave.api import Project
from tomoweave.formats.mrc import read_mrc
from tomoweave.sim import simulate_dataset


def _import_movies(project, dataset):
    return project.run("import.mdoc", params={
        "files": [str(s.mdoc_path) for s in dataset.series],
        "frames_dir": str(dataset.out_dir / "frames")}, executor="inline")


def _correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def corrected(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    dataset = simulate_dataset(root / "sim", preset="test", seed=2, movies_on=True,
                               tilt_step_deg=20.0)
    project = Project.init(root / "project")
    imported = _import_movies(project, dataset)
    run = project.run("motion.correct", inputs={"tilt_series": imported.name},
                      executor="inline")
    return project, run, dataset


def test_drift_within_0_1_px_rms_of_the_truth_and_sums_closer_to_the_noise_free_image(corrected):
    project, run, dataset = corrected
    assert run.state == "finished"
    (series,) = project.items(run)
    truth = dataset.series[0].truth()
    noise_free, _ = read_mrc(truth_path := dataset.series[0].noise_free_path)
    assert truth_path is not None
    errors = []
    for tilt in series.tilts:
        true_tilt = min(truth.tilts, key=lambda t: abs(t.nominal_tilt_deg - tilt.tilt_deg))
        error = np.array(tilt.drift_px) - np.array(true_tilt.drift_px)
        error -= error.mean(axis=0)  # the reference position of a movie is arbitrary
        errors.append(np.mean(np.sum(error**2, axis=1)))
        corrected_sum, _ = read_mrc(project.path(tilt.image_path))
        frames, _ = read_mrc(dataset.out_dir / "frames" / true_tilt.movie_file)
        clean = noise_free[true_tilt.stack_index]
        assert _correlation(corrected_sum[tilt.image_index], clean) > _correlation(
            frames.sum(axis=0), clean), tilt.tilt_deg
        assert tilt.even_path and tilt.odd_path and tilt.even_index == tilt.image_index
    rms_px = float(np.sqrt(np.mean(errors)))
    assert rms_px <= 0.1, rms_px
    assert (project.root / run.folder / "outputs" / f"{series.name}_drift.png").stat().st_size \
        > 5_000


def test_short_movie_fails_its_series_with_a_clear_message_and_the_other_goes_on(tmp_path):
    dataset = simulate_dataset(tmp_path / "sim", preset="tiny", seed=4, movies_on=True,
                               n_series=2)
    movie = dataset.series[1].frame_paths[3]
    with mrcfile.open(movie, mode="r") as mrc:
        frames = np.array(mrc.data[:2])
    with mrcfile.new(movie, overwrite=True) as mrc:  # the copy stopped after two frames
        mrc.set_data(frames)
    project = Project.init(tmp_path / "project")
    run = project.run("motion.correct", inputs={"tilt_series": _import_movies(project,
                                                                               dataset).name},
                      executor="inline")
    assert run.state == "finished with failures"
    assert [s.name for s in project.items(run)] == [dataset.series[0].name]
    error = project.catalog.journal(run.id)[dataset.series[1].name]["error"]
    assert movie.name in error and "2 frames" in error and "mdoc says 4" in error


def test_even_and_odd_sums_add_up_and_dose_weighting_keeps_the_mean():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(128, 128)).astype(np.float32) + 10.0
    frames = np.stack([shift_image(image, (0.3 * i, -0.2 * i)) for i in range(6)])
    plain = correct_motion(frames, 2.0, dose_weighting=False)
    # the three sums are float32 FFT phase-ramp shifts of the frames: each value's rounding is
    # within a few eps * log2(pixels) of the largest value, whatever the summation order
    fft_tolerance = 16 * np.finfo(np.float32).eps * np.log2(image.size) * np.abs(
        plain.aligned_sum).max()
    assert np.abs(plain.even_sum + plain.odd_sum - plain.aligned_sum).max() <= fft_tolerance
    assert np.abs(plain.drift_px - np.array([[0.3 * i, -0.2 * i] for i in range(6)])).max() < 0.02
    # Frames with independent content: high frequencies of the weighted sum must come mostly
    # from the first frames, which the beam had damaged least.
    independent = rng.normal(size=(6, 128, 128)).astype(np.float32) + 10.0
    y, x = np.mgrid[0:128, 0:128]
    independent += 30.0 * np.exp(-((x - 64) ** 2 + (y - 64) ** 2) / 32.0)  # a smooth landmark
    weighted = correct_motion(independent, 2.0, dose_per_frame_e_a2=10.0, pre_exposure_e_a2=5.0)
    assert abs(weighted.aligned_sum.mean() - independent.sum(axis=0).mean()) < 1e-2

    def high_pass(image):
        spectrum = np.fft.rfft2(image)
        spectrum[:32, :32] = 0
        spectrum[-32:, :32] = 0
        return np.fft.irfft2(spectrum, s=image.shape)

    first = _correlation(high_pass(weighted.aligned_sum), high_pass(independent[0]))
    last = _correlation(high_pass(weighted.aligned_sum), high_pass(independent[-1]))
    assert first > 2.0 * last > 0


def test_patches_follow_local_motion_that_a_global_shift_cannot():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    n, size = 8, 384
    base = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5).astype(np.float32)
    base /= base.std()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for index in range(n):
        t = index / (n - 1)  # the specimen stretches: 3 px across the field by the last frame
        dx = t * (1.0 + 3.0 * (xx / size - 0.5))
        dy = t * (-0.5 + 3.0 * (yy / size - 0.5))
        warped = ndimage.map_coordinates(base, [yy - dy, xx - dx], order=3, mode="reflect")
        frames.append(warped + rng.normal(0, 1.5, (size, size)))
    frames = np.array(frames, np.float32)
    global_only = correct_motion(frames, 2.0, patches=0)
    local = correct_motion(frames, 2.0, patches=5)
    assert local.local_rms_px > 0.2, local.notes
    assert _correlation(local.aligned_sum, base) > _correlation(global_only.aligned_sum, base) \
        + 0.02
