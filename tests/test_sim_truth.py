"""The simulator's ground truth agrees with its images: bead geometry and the stated CTF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import fft

from tomoweave.algorithms.ctf_model import ctf_2d
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry import project_points_a
from tomoweave.geometry.projection import projection_matrix
from tomoweave.sim import simulate_dataset
from tomoweave.sim.imaging import contrast_image, crop, interaction_constant_rad_per_v_a
from tomoweave.sim.projector_kernel import project_volume_slabs
from tomoweave.sim.specimen import add_sphere

MAX_BEAD_ERROR_PX = 0.2


def bead_centroid_errors(truth, projections: np.ndarray, exclude_near_particles: bool):
    """Distances (px) between each projected bead and the centroid of its image, per tilt.

    Beads cut by the image border, or whose projection touches another bead (or, optionally, a
    particle), are skipped: their centroid measures the neighbour, not the geometry.
    """
    radius_px = truth.bead_diameter_a / 2 / truth.pixel_size_a
    window = int(radius_px + 3)
    particles_a = truth.particle_positions_a()
    particle_radii_px = np.array([p.radius_a for p in truth.placed_particles]) / truth.pixel_size_a
    centre = np.array(truth.image_size_xy) // 2
    errors = []
    for index, tilt in enumerate(truth.tilts):
        matrix = tilt.projection_matrix()
        beads_px = project_points_a(matrix, np.array(truth.beads_a)) / truth.pixel_size_a + centre
        image = projections[index]
        for bead, (x, y) in enumerate(beads_px):
            if not (window < x < image.shape[1] - window - 1
                    and window < y < image.shape[0] - window - 1):
                continue
            others = np.delete(beads_px, bead, axis=0)
            if len(others) and np.hypot(*(others - (x, y)).T).min() < 2 * radius_px + 6:
                continue
            if exclude_near_particles and len(particles_a):
                near_px = project_points_a(matrix, particles_a) / truth.pixel_size_a + centre
                gap = np.hypot(*(near_px - (x, y)).T) - particle_radii_px
                if gap.min() < radius_px:
                    continue
            x0, y0 = int(round(x)), int(round(y))
            patch = image[y0 - window:y0 + window + 1, x0 - window:x0 + window + 1]
            weight = np.clip(patch - 0.5 * patch.max(), 0.0, None)
            yy, xx = np.mgrid[-window:window + 1, -window:window + 1]
            cx = (weight * xx).sum() / weight.sum() + x0
            cy = (weight * yy).sum() / weight.sum() + y0
            errors.append(np.hypot(cx - x, cy - y))
    return np.array(errors)


def test_beads_project_onto_their_image_centroids(tmp_path):
    """Acceptance: projecting the 3D beads with the truth alignment lands within 0.2 px."""
    data = simulate_dataset(tmp_path, preset="test", seed=4, particles_on=False,
                            membranes_on=False, n_beads=12, noise_on=False)
    truth = data.series[0].truth()
    projections, _ = read_mrc(data.series[0].projections_path)
    errors = bead_centroid_errors(truth, projections, exclude_near_particles=False)
    assert len(errors) > 200, "too few measurable beads for a meaningful test"
    assert errors.max() < MAX_BEAD_ERROR_PX, f"max bead error {errors.max():.3f} px"
    # the misalignment is large compared with the tolerance, so a wrong sign would show
    assert max(abs(t.shift_x_a) for t in truth.tilts) / truth.pixel_size_a > 5


def test_beads_in_full_specimen_with_particles_and_vesicle(tmp_path):
    data = simulate_dataset(tmp_path, preset="test", seed=5, noise_on=False, n_beads=18,
                            tilt_step_deg=6.0)
    truth = data.series[0].truth()
    projections, _ = read_mrc(data.series[0].projections_path)
    errors = bead_centroid_errors(truth, projections, exclude_near_particles=True)
    assert len(errors) > 20
    assert np.median(errors) < 0.1
    assert np.percentile(errors, 90) < MAX_BEAD_ERROR_PX


def read_stack(path) -> np.ndarray:
    data, _ = read_mrc(path)
    return data.reshape(-1, *data.shape[-2:])


def _contrast_and_phase(data, index: int):
    """Image contrast c (from noise-free counts = mean·exp(2c)) and phase of the specimen."""
    truth = data.series[0].truth()
    noise_free = read_stack(data.series[0].noise_free_path)
    projections = read_stack(data.series[0].projections_path)
    tilt = truth.tilts[index]
    matrix = tilt.projection_matrix()
    ice_path_a = truth.thickness_a / abs(matrix[2, 2])
    mean = (tilt.dose_e_a2 * truth.pixel_size_a**2
            * np.exp(-ice_path_a / truth.config["ice_mean_free_path_a"]))
    contrast = 0.5 * np.log(noise_free[index] / mean)
    phase = projections[index] * interaction_constant_rad_per_v_a(truth.acquisition.voltage_kv)
    return truth, contrast, phase


@pytest.mark.parametrize("astigmatism_a", [0.0, 3000.0])
def test_ctf_applied_with_the_stated_defocus(tmp_path, astigmatism_a):
    """Transfer ratio F[contrast] / F[phase] equals the CTF of the truth's defocus."""
    data = simulate_dataset(
        tmp_path, preset="tiny", seed=2, pixel_size_a=5.0, image_size_px=128,
        thickness_a=200.0, ctf_slab_a=20.0, particles_on=False, n_beads=10, membranes_on=True,
        n_vesicles=1, vesicle_radius_a=(120.0, 150.0), tilt_min_deg=0.0, tilt_max_deg=0.0,
        noise_on=False, damping_on=False, astigmatism_a=astigmatism_a, shift_sigma_a=0.0)
    truth, contrast, phase = _contrast_and_phase(data, 0)
    tilt = truth.tilts[0]
    spectrum_c = fft.rfft2(contrast - contrast.mean())
    spectrum_p = fft.rfft2(phase - phase.mean())
    strong = _informative(spectrum_p, contrast.shape, truth.pixel_size_a)
    ratio = np.real(spectrum_c[strong] / spectrum_p[strong])

    def agreement(defocus_u_a, defocus_v_a, angle_deg):
        ctf = ctf_2d(contrast.shape, truth.pixel_size_a, defocus_u_a, defocus_v_a, angle_deg,
                     rfft=True)[strong]
        return float(np.corrcoef(ratio, ctf)[0, 1])

    stated = agreement(tilt.defocus_u_a, tilt.defocus_v_a, tilt.astigmatism_angle_deg)
    assert stated > 0.95, f"correlation with the stated CTF only {stated:.3f}"
    offsets = np.arange(-2000.0, 2001.0, 20.0)
    scores = [agreement(tilt.defocus_u_a + d, tilt.defocus_v_a + d, tilt.astigmatism_angle_deg)
              for d in offsets]
    best = offsets[int(np.argmax(scores))]
    assert abs(best) <= 60, f"best-matching defocus is {best:+.0f} Å from the stated one"
    if astigmatism_a:
        swapped = agreement(tilt.defocus_u_a, tilt.defocus_v_a, tilt.astigmatism_angle_deg + 90)
        assert swapped < stated - 0.02
    # and the ring zeros: where the stated CTF vanishes the image has (almost) no power
    ctf = ctf_2d(contrast.shape, truth.pixel_size_a, tilt.defocus_u_a, tilt.defocus_v_a,
                 tilt.astigmatism_angle_deg, rfft=True)
    at_zeros = (np.abs(ctf) < 0.05) & strong
    at_peaks = (np.abs(ctf) > 0.9) & strong
    assert np.abs(spectrum_c[at_zeros]).mean() < 0.15 * np.abs(spectrum_c[at_peaks]).mean()


def _informative(spectrum_p, shape, pixel_size_a):
    """Frequencies beyond the first CTF lobe where the specimen has power (ratios are stable)."""
    fy = np.fft.fftfreq(shape[0], pixel_size_a)[:, None]
    fx = np.fft.rfftfreq(shape[1], pixel_size_a)[None, :]
    power = np.abs(spectrum_p)
    return (np.hypot(fx, fy) > 0.02) & (power > 1e-3 * power.max())


def _fit_defocus_a(contrast, phase, pixel_size_a, candidates_a):
    spectrum_c = fft.rfft2(contrast - contrast.mean())
    spectrum_p = fft.rfft2(phase - phase.mean())
    strong = _informative(spectrum_p, contrast.shape, pixel_size_a)
    ratio = np.real(spectrum_c[strong] / spectrum_p[strong])
    scores = [np.corrcoef(ratio, ctf_2d(contrast.shape, pixel_size_a, d, d, rfft=True)[strong])[0, 1]
              for d in candidates_a]
    return float(candidates_a[int(np.argmax(scores))])


def test_defocus_gradient_follows_height():
    """At 60° tilt, two beads on either side of the tilt axis appear at the defoci their heights
    predict: defocus_tilt + z, z = third row of the projection matrix applied to the bead."""
    pixel_size_a, size = 5.0, 160
    volume = np.zeros((40, size, 2 * size), dtype=np.float32)
    beads_a = np.array([[-500.0, 30.0, 0.0], [500.0, -30.0, 0.0]])
    for bead in beads_a:
        add_sphere(volume, pixel_size_a, bead, 50.0, 25.0)
    matrix = projection_matrix(60.0, z_rot_deg=0.0)
    slabs, heights_a = project_volume_slabs(volume, matrix, pixel_size_a, (size, size), 20.0)
    defocus_a = 30000.0
    ctf = {"defocus_u_a": defocus_a, "defocus_v_a": defocus_a, "astigmatism_angle_deg": 0.0,
           "voltage_kv": 300.0, "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.07}
    pad = 40
    contrast = crop(contrast_image(slabs, heights_a, pixel_size_a, ctf, None, pad), pad,
                    (size, size))
    phase = slabs.sum(0)
    expected = defocus_a + project_heights_a(matrix, beads_a)
    assert abs(expected[1] - expected[0]) > 300, "geometry gives too small a gradient to test"
    candidates = defocus_a + np.arange(-1500.0, 1501.0, 10.0)
    half = size // 2  # specimen X is image X at z_rot 0: bead 0 left, bead 1 right
    for side, want in zip((slice(0, half), slice(half, None)), expected, strict=True):
        got = _fit_defocus_a(contrast[:, side], phase[:, side], pixel_size_a, candidates)
        assert abs(got - want) < 40, f"fitted {got:.0f} Å, the bead's height says {want:.0f} Å"


def project_heights_a(matrix: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    return (np.asarray(points_a) @ matrix[:3, :3].T)[:, 2]
