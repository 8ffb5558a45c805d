"""Simulated data sets: determinism, placement, tilt order and dose, .mdoc, movies, converters."""

from __future__ import annotations

import itertools
from pathlib import Path

import mdocfile
import numpy as np
import pytest
from scipy import fft

from tomoweave.algorithms.preprocess import critical_exposure_e_a2
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry.rotations import is_rotation_matrix
from tomoweave.model import CtfTilt, Particle, TiltAlignment
from tomoweave.sim import SIM_PRESETS, load_truth, simulate_dataset
from tomoweave.sim.imaging import align_and_sum_frames
from tomoweave.sim.tilt_scheme import acquisition_angles_deg

TS01_MDOC = Path(__file__).resolve().parents[2] / "shared" / "data" / "serialem" / "TS_01.mdoc"


@pytest.fixture(scope="module")
def tiny_movies(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_movies")
    return simulate_dataset(out, preset="tiny", seed=11, n_series=2, movies_on=True,
                            drift_total_px=4.0)


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    first = simulate_dataset(tmp_path / "a", preset="tiny", seed=3)
    again = simulate_dataset(tmp_path / "b", preset="tiny", seed=3)
    other = simulate_dataset(tmp_path / "c", preset="tiny", seed=4)
    stack_a, _ = read_mrc(first.series[0].stack_path)
    stack_b, _ = read_mrc(again.series[0].stack_path)
    stack_c, _ = read_mrc(other.series[0].stack_path)
    np.testing.assert_array_equal(stack_a, stack_b)
    assert not np.allclose(stack_a, stack_c)
    truth_a = first.series[0].truth().model_dump(exclude={"config"})
    truth_b = again.series[0].truth().model_dump(exclude={"config"})
    assert truth_a == truth_b
    assert first.series[0].mdoc_path.read_text() == again.series[0].mdoc_path.read_text()


def test_particles_and_beads_do_not_overlap_and_stay_in_the_ice(tmp_path):
    data = simulate_dataset(tmp_path, preset="test", seed=1, tilt_min_deg=0.0,
                            tilt_max_deg=0.0)
    truth = data.series[0].truth()
    spheres = [(np.array(p.position_a), p.radius_a) for p in truth.placed_particles]
    spheres += [(np.array(b), truth.bead_diameter_a / 2) for b in truth.beads_a]
    assert len(truth.placed_particles) >= 25 and len(truth.beads_a) == 8
    for (a, ra), (b, rb) in itertools.combinations(spheres, 2):
        assert np.linalg.norm(a - b) >= ra + rb - 1e-6
    for centre, radius in spheres:
        assert abs(centre[2]) + radius <= truth.thickness_a / 2 + 1e-6
    for particle in truth.placed_particles:
        assert is_rotation_matrix(np.array(particle.rotation))
    assert {p.template for p in truth.placed_particles} == {"4v4r", "1bxn", "3j9i", "6pxm"}
    # the volume holds density where the truth says particles are, and none far from anything
    volume, pixel_size_a = read_mrc(data.series[0].volume_path)
    centre = np.array(volume.shape[::-1]) // 2
    for particle in truth.placed_particles:
        x, y, z = np.round(np.array(particle.position_a) / pixel_size_a + centre).astype(int)
        assert volume[z - 2:z + 3, y - 2:y + 3, x - 2:x + 3].max() > 0.3


def test_orientations_are_uniform_on_so3(tmp_path):
    data = simulate_dataset(tmp_path, preset="tiny", seed=5, n_series=1,
                            particles={"6pxm": 60}, thickness_a=1200.0, image_size_px=96,
                            tilt_min_deg=0.0, tilt_max_deg=0.0, n_beads=0)
    rotations = np.array([p.rotation for p in data.series[0].truth().placed_particles])
    assert len(rotations) >= 40
    # for uniform rotations E[R] = 0; each entry's mean has std 1/sqrt(3n)
    assert np.abs(rotations.mean(axis=0)).max() < 4 / np.sqrt(3 * len(rotations))


def test_dose_symmetric_order_is_serialem_order_of_ts01():
    frame = mdocfile.read(TS01_MDOC)
    real_order = np.round(frame["TiltAngle"].to_numpy(), 0)
    simulated = acquisition_angles_deg("dose_symmetric", -60, 60, 3, group_size=2)
    np.testing.assert_array_equal(simulated, real_order)


def test_bidirectional_order():
    angles = acquisition_angles_deg("bidirectional", -30, 30, 10, start_deg=0.0)
    np.testing.assert_array_equal(angles, [0, 10, 20, 30, -10, -20, -30])


def test_stack_is_in_acquisition_order_with_accumulated_dose(tmp_path):
    data = simulate_dataset(tmp_path, preset="tiny", seed=2, dose_per_tilt_e_a2=2.5)
    truth = data.series[0].truth()
    assert [t.acquisition_order for t in truth.tilts] == list(range(len(truth.tilts)))
    np.testing.assert_allclose([t.pre_exposure_e_a2 for t in truth.tilts],
                               2.5 * np.arange(len(truth.tilts)))
    nominal = [t.nominal_tilt_deg for t in truth.tilts]
    assert nominal[:5] == [0.0, 10.0, -10.0, -20.0, 20.0]
    offsets = [t.y_tilt_deg - t.nominal_tilt_deg for t in truth.tilts]
    assert np.ptp(offsets) < 1e-9 and abs(offsets[0]) > 0  # one tilt-angle offset per series


@pytest.mark.parametrize("voltage_kv", [300.0, 200.0])
def test_exposure_damping_follows_grant_grigorieff(tmp_path, voltage_kv):
    """The last tilt's contrast, damped vs undamped, falls as exp(-N / 2Ne(k)) with the dose
    filter's critical exposure at the series' voltage (faster damage below 300 kV)."""
    settings = dict(preset="tiny", seed=6, noise_on=False, dose_per_tilt_e_a2=6.0,
                    pixel_size_a=8.0, image_size_px=96, particles_on=False, n_beads=12,
                    voltage_kv=voltage_kv)
    damped = simulate_dataset(tmp_path / "on", damping_on=True, **settings)
    plain = simulate_dataset(tmp_path / "off", damping_on=False, **settings)
    truth = damped.series[0].truth()
    last = truth.tilts[-1]
    spectra = []
    for data in (damped, plain):
        images, _ = read_mrc(data.series[0].noise_free_path)
        contrast = np.log(images[-1])
        spectra.append(np.abs(fft.rfft2(contrast - contrast.mean())))
    fy = np.fft.fftfreq(96, 8.0)[:, None]
    fx = np.fft.rfftfreq(96, 8.0)[None, :]
    k = np.hypot(fx, fy)
    band = (k > 0.03) & (k < 0.05) & (spectra[1] > 1e-3 * spectra[1].max())
    exposure = last.pre_exposure_e_a2 + last.dose_e_a2 / 2
    expected = np.exp(-exposure / (2 * critical_exposure_e_a2(k[band], voltage_kv)))
    measured = spectra[0][band] / spectra[1][band]
    assert exposure == pytest.approx(63.0)
    np.testing.assert_allclose(np.median(measured / expected), 1.0, atol=0.05)
    assert np.median(measured) < 0.7  # the damping is strong at this dose, so this test can fail


def test_mdoc_read_by_mdocfile_matches_truth(tiny_movies):
    series = tiny_movies.series[1]
    truth = series.truth()
    frame = mdocfile.read(series.mdoc_path)
    np.testing.assert_allclose(frame["TiltAngle"].to_numpy(),
                               [t.nominal_tilt_deg for t in truth.tilts], atol=1e-4)
    assert (frame["ZValue"].to_numpy() == np.arange(len(truth.tilts))).all()
    assert frame["PixelSpacing"].iloc[0] == pytest.approx(truth.pixel_size_a)
    times = [np.datetime64(_parse_serialem(t)) for t in frame["DateTime"]]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    paths = [str(path) for path in frame["SubFramePath"]]
    names = [path.replace("\\", "/").rsplit("/", 1)[-1] for path in paths]
    assert names == [t.movie_file for t in truth.tilts]
    assert all(path.startswith("D:\\") for path in paths)
    assert names[0] == "TS_02_000_0.0.mrc"
    assert "Tilt axis angle = 85" in series.mdoc_path.read_text()
    for name in names:
        assert (tiny_movies.out_dir / "frames" / name).exists()


def _parse_serialem(text: str) -> str:
    from datetime import datetime

    return datetime.strptime(text.strip(), "%d-%b-%y  %H:%M:%S").isoformat()


def test_movies_sum_to_the_image_and_follow_the_stated_drift(tiny_movies):
    series = tiny_movies.series[0]
    truth = series.truth()
    stack, _ = read_mrc(series.stack_path)
    for index in (0, len(truth.tilts) - 1):
        tilt = truth.tilts[index]
        frames, _ = read_mrc(series.frame_paths[index])
        drift = np.array(tilt.drift_px)
        assert frames.shape[0] == 4 and len(drift) == 4
        assert np.linalg.norm(drift[-1] - drift[0]) == pytest.approx(4.0, rel=0.3)
        # frames moved back by their drift add up to the tilt image (up to the edge padding)
        inner = (slice(6, -6), slice(6, -6))
        summed = align_and_sum_frames(frames, drift, 8)
        np.testing.assert_allclose(summed[inner], stack[index][inner], rtol=5e-3)
        # each frame is displaced from the image by its drift (phase correlation, sub-pixel)
        for frame, shift in zip(frames, drift, strict=True):
            measured = _measure_shift(stack[index], frame)
            assert np.hypot(*(measured - shift)) < 0.3, (measured, shift)
        # the frame dose is a quarter of the tilt's
        assert frames.mean(axis=(1, 2)) == pytest.approx(stack[index].mean() / 4, rel=0.05)


def test_noise_free_frames_moved_back_add_up_to_the_noise_free_image(tmp_path):
    data = simulate_dataset(tmp_path, preset="tiny", seed=12, movies_on=True, noise_on=False,
                            drift_total_px=4.0, n_frames=5)
    series = data.series[0]
    truth = series.truth()
    noise_free, _ = read_mrc(series.noise_free_path)
    edge = 6  # drift up to 4 px: the outermost pixels see content from outside the field
    inner = (slice(edge, -edge), slice(edge, -edge))
    for index in (0, 5, 10):
        frames, _ = read_mrc(series.frame_paths[index])
        summed = align_and_sum_frames(frames, np.array(truth.tilts[index].drift_px), 8)
        np.testing.assert_allclose(summed[inner], noise_free[index][inner], rtol=5e-3)
        # and without moving them back the sum is blurred: the drift is really there
        assert np.abs(frames.sum(0) - noise_free[index])[inner].max() > 10 * 5e-3 * noise_free[
            index].mean()


def _measure_shift(reference: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """(dx, dy) that moves ``reference`` onto ``moved``: correlation peak + parabolic refinement."""
    a = reference - reference.mean()
    b = moved - moved.mean()
    correlation = fft.irfft2(np.conj(fft.rfft2(a)) * fft.rfft2(b), a.shape)
    correlation = fft.fftshift(correlation)
    peak = np.array(np.unravel_index(np.argmax(correlation), correlation.shape))
    offsets = []
    for axis in (0, 1):
        step = np.eye(2, dtype=int)[axis]
        left, mid, right = (correlation[tuple(peak - step)], correlation[tuple(peak)],
                            correlation[tuple(peak + step)])
        offsets.append(0.5 * (left - right) / (left - 2 * mid + right))
    position = peak + np.array(offsets) - np.array(correlation.shape) // 2
    return position[::-1]


def test_converters_to_model_objects(tmp_path):
    data = simulate_dataset(tmp_path, preset="tiny", seed=8)
    truth = load_truth(data.series[0].truth_path)
    alignments = truth.tilt_alignments()
    ctfs = truth.ctf_tilts()
    particles = truth.particles()
    assert all(isinstance(a, TiltAlignment) for a in alignments)
    assert all(isinstance(c, CtfTilt) for c in ctfs)
    assert all(isinstance(p, Particle) for p in particles) and particles
    assert len(alignments) == len(ctfs) == 11
    assert alignments[3].shift_x_a == truth.tilts[3].shift_x_a
    assert ctfs[3].defocus_u_a - ctfs[3].defocus_v_a == pytest.approx(400.0)
    assert truth.tomogram_size_xyz[:2] == truth.image_size_xy
    assert truth.acquisition.voltage_kv == 300 and truth.acquisition.amplitude_contrast == 0.07
    assert particles[0].position_a == truth.placed_particles[0].position_a
    assert set(SIM_PRESETS) >= {"tiny", "test", "demo"}


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown simulation preset"):
        simulate_dataset(tmp_path, preset="huge")
    with pytest.raises(ValueError, match="unknown templates"):
        simulate_dataset(tmp_path, preset="tiny", particles={"7xyz": 3})
    with pytest.raises(ValueError, match="not a tomoweave ground-truth file"):
        (tmp_path / "bad.json").write_text("{}")
        load_truth(tmp_path / "bad.json")


def test_membrane_proteins_sit_in_their_membrane_along_its_normal(tmp_path):
    from tomoweave.sim.specimen import Vesicle, ellipsoid_distance_a

    data = simulate_dataset(tmp_path, preset="test", seed=9, tilt_min_deg=0.0, tilt_max_deg=0.0,
                            n_vesicles=2, membrane_proteins={"6pxm": 8})
    truth = data.series[0].truth()
    on_membrane = [p for p in truth.placed_particles if p.membrane_id is not None]
    assert len(on_membrane) >= 6 and len(truth.vesicles) == 2
    for particle in on_membrane:
        vesicle = truth.vesicles[particle.membrane_id]
        shape = Vesicle(np.array(vesicle.centre_a), np.array(vesicle.radii_a))
        assert abs(ellipsoid_distance_a(np.array([particle.position_a]), shape)[0]) < 1.0
        normal = np.array(particle.normal)
        outward = np.array(particle.position_a) - np.array(vesicle.centre_a)
        assert normal @ outward > 0 and np.linalg.norm(normal) == pytest.approx(1.0)
        np.testing.assert_allclose(np.array(particle.rotation) @ [0, 0, 1], normal, atol=1e-9)
    model = [p for p in truth.particles() if p.membrane_id is not None]
    assert len(model) == len(on_membrane) and model[0].normal == on_membrane[0].normal


def test_defocus_range_gives_each_series_its_own_nominal_defocus(tmp_path):
    data = simulate_dataset(tmp_path, preset="tiny", seed=1, n_series=3,
                            defocus_range_a=(20000.0, 50000.0), defocus_sigma_a=300.0)
    truths = data.truths()
    nominal = [t.nominal_defocus_a for t in truths]
    assert all(20000 <= n <= 50000 for n in nominal) and len(set(nominal)) == 3
    for truth in truths:
        mean = np.mean([(t.defocus_u_a + t.defocus_v_a) / 2 for t in truth.tilts])
        assert abs(mean - truth.nominal_defocus_a) < 3 * 300 / np.sqrt(len(truth.tilts)) + 1
        assert f"TargetDefocus = {-truth.nominal_defocus_a / 1e4:g}" in (
            tmp_path / truth.mdoc_file).read_text()
    same = simulate_dataset(tmp_path / "b", preset="tiny", seed=1, n_series=1)
    assert same.truths()[0].beads_a == truths[0].beads_a  # the rest of the series is unchanged


@pytest.mark.parametrize("movies_on", [False, True])
def test_xray_hits_are_where_the_truth_says(tmp_path, movies_on):
    data = simulate_dataset(tmp_path, preset="tiny", seed=13, xrays_per_tilt=5,
                            movies_on=movies_on, n_frames=3)
    plain = simulate_dataset(tmp_path / "plain", preset="tiny", seed=13, movies_on=movies_on,
                             n_frames=3)
    truth = data.series[0].truth()
    stack, _ = read_mrc(data.series[0].stack_path)
    clean, _ = read_mrc(plain.series[0].stack_path)
    assert plain.series[0].truth().beads_a == truth.beads_a
    for index, tilt in enumerate(truth.tilts):
        assert len(tilt.xrays_px) == 5
        excess = stack[index] - clean[index]
        for x, y in tilt.xrays_px:
            if not (2 <= x < 62 and 2 <= y < 62):
                continue
            # the hit (moved back by its frame's drift in movies) stands out by > 3x the mean
            assert excess[y - 1:y + 2, x - 1:x + 2].max() > 3 * clean[index].mean()
        if movies_on:
            assert len(tilt.xray_frames) == 5
            frames, _ = read_mrc(data.series[0].frame_paths[index])
            clean_frames, _ = read_mrc(plain.series[0].frame_paths[index])
            hits = np.argwhere(frames - clean_frames > 10 * clean_frames.mean())
            assert sorted(hits[:, 0].tolist()) == sorted(tilt.xray_frames)
