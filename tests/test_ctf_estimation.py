"""CTF estimation accuracy on simulated tilted images with ground truth.

Images are made here: a random weak-phase specimen, the CTF of tomoweave.algorithms.ctf_model
applied per strip of equal defocus (the gradient across the tilt axis), a B-factor envelope, a
background falling with frequency under the Thon rings, and noise. One test forms the image with
the simulator's own physics (tomoweave.sim) to pin the sign of the defocus gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms.ctf_estimation import estimate_ctf, local_defocus_offset_a
from tomoweave.algorithms.ctf_model import ctf_2d


def simulate_ctf_image(size, pixel_size_a, defocus_u_a, defocus_v_a, angle_deg, tilt_deg=0.0,
                       z_rot_deg=0.0, seed=0, bfactor_a2=200.0, signal_to_noise=0.3,
                       step_a=50.0, phase_shift_deg=0.0):
    """Noisy image [size, size] of a random phase object with a tilt-dependent CTF."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size, d=pixel_size_a)[:, None]
    fx = np.fft.rfftfreq(size, d=pixel_size_a)[None, :]
    k2 = fx * fx + fy * fy
    specimen = scipy.fft.rfft2(rng.normal(size=(size, size))) * np.exp(-bfactor_a2 * k2 / 4)
    y, x = np.mgrid[0:size, 0:size].astype(float)
    offsets = local_defocus_offset_a((x - size // 2) * pixel_size_a,
                                     (y - size // 2) * pixel_size_a, tilt_deg, z_rot_deg)
    levels = np.round(offsets / step_a).astype(int)
    signal = np.zeros((size, size), np.float32)
    for level in np.unique(levels):
        delta = level * step_a
        ctf = ctf_2d((size, size), pixel_size_a, defocus_u_a + delta, defocus_v_a + delta,
                     angle_deg, phase_shift_deg=phase_shift_deg, rfft=True)
        image = scipy.fft.irfft2(specimen * ctf, s=(size, size))
        signal[levels == level] = image[levels == level]
    signal /= signal.std()
    # Background under the rings: strong at low frequency (like a detector MTF and thick ice).
    noise = scipy.fft.rfft2(rng.normal(size=(size, size)))
    noise *= 1.0 + 3.0 * np.exp(-np.sqrt(k2) * pixel_size_a / 0.05)
    noise_image = scipy.fft.irfft2(noise, s=(size, size))
    noise_image /= noise_image.std()
    return (np.sqrt(signal_to_noise) * signal + noise_image + 5.0).astype(np.float32)


def _relative_errors(fit, defocus_u_a, defocus_v_a):
    return (abs(fit.defocus_u_a / defocus_u_a - 1), abs(fit.defocus_v_a / defocus_v_a - 1))


def _angle_error_deg(estimated, truth):
    difference = (estimated - truth) % 180.0
    return min(difference, 180.0 - difference)


@pytest.mark.parametrize("defocus_a, angle_deg, seed", [
    (15000.0, 30.0, 1), (25000.0, 160.0, 2), (35000.0, 75.0, 3), (50000.0, 120.0, 4)])
def test_untilted_defocus_within_2_percent_and_astigmatism_angle_within_5_degrees(
        defocus_a, angle_deg, seed):
    astigmatism_a = 1200.0
    u, v = defocus_a + astigmatism_a / 2, defocus_a - astigmatism_a / 2
    image = simulate_ctf_image(512, 3.0, u, v, angle_deg, seed=seed)
    fit = estimate_ctf(image, 3.0, nominal_defocus_a=30000.0)
    assert max(_relative_errors(fit, u, v)) <= 0.02, fit
    assert _angle_error_deg(fit.astigmatism_angle_deg, angle_deg) <= 5.0, fit
    assert fit.defocus_u_a >= fit.defocus_v_a
    assert 3.0 * 2 <= fit.fit_resolution_a <= 15.0


@pytest.mark.parametrize("defocus_a, tilt_deg, z_rot_deg", [
    (15000.0, 60.0, 85.0), (50000.0, -60.0, 85.0), (30000.0, -60.0, 10.0)])
def test_defocus_at_60_degrees_tilt_within_5_percent(defocus_a, tilt_deg, z_rot_deg):
    u, v = defocus_a + 400.0, defocus_a - 400.0
    image = simulate_ctf_image(512, 3.0, u, v, 45.0, tilt_deg, z_rot_deg, seed=7)
    fit = estimate_ctf(image, 3.0, tilt_deg=tilt_deg, z_rot_deg=z_rot_deg)
    assert max(_relative_errors(fit, u, v)) <= 0.05, fit


def test_gradient_sign_matches_the_simulator_image_formation():
    """The simulator's physics (per-height CTF, tomoweave.geometry projection) on a thin random
    slab tilted by 60°: untilted fits of strips left and right of the axis must differ as
    local_defocus_offset_a says, and the full fit must find the defocus at the axis."""
    from tomoweave.geometry import projection_matrix
    from tomoweave.sim import imaging
    from tomoweave.sim.projector_kernel import project_volume_slabs

    rng = np.random.default_rng(0)
    pixel_size_a, size, pad, tilt_deg = 3.0, 768, 32, 60.0
    volume = rng.normal(size=(12, 768, 1536)).astype(np.float32)  # a thin slab, wide along X
    ctf = {"defocus_u_a": 30000.0, "defocus_v_a": 30000.0, "astigmatism_angle_deg": 0.0,
           "voltage_kv": 300.0, "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.07}
    slabs, heights_a = project_volume_slabs(volume, projection_matrix(tilt_deg), pixel_size_a,
                                            (size, size), 50.0)
    contrast = imaging.crop(imaging.contrast_image(slabs * 0.002, heights_a, pixel_size_a, ctf,
                                                   None, pad), pad, (size, size))
    image = contrast / contrast.std() + rng.normal(size=contrast.shape)
    strip = size // 3
    measured = {}
    for side, columns in (("left", slice(0, strip)), ("right", slice(size - strip, size))):
        fit = estimate_ctf(image[:, columns], pixel_size_a, fit_astigmatism=False, tile_px=128)
        centre_x_a = ((columns.start + columns.stop) / 2 - size // 2) * pixel_size_a
        measured[side] = (fit.defocus_u_a, local_defocus_offset_a(centre_x_a, 0.0, tilt_deg, 0.0))
    observed = measured["right"][0] - measured["left"][0]
    expected = measured["right"][1] - measured["left"][1]
    assert abs(expected) > 1500.0
    assert np.sign(observed) == np.sign(expected), measured
    assert abs(observed - expected) <= 0.3 * abs(expected), measured
    fit = estimate_ctf(image, pixel_size_a, tilt_deg=tilt_deg, z_rot_deg=0.0)
    assert max(_relative_errors(fit, 30000.0, 30000.0)) <= 0.05, fit


def test_4k_sub_angstrom_image_with_detector_artefacts_and_a_wrong_nominal_defocus():
    """Real-data conditions: 4096² at 0.8 Å/px, hot columns, a dead row, a periodic readout
    pattern, X-ray hits, and a header claiming 1.5 µm when the truth is 3.2 µm."""
    size, pixel_size_a = 4096, 0.8
    u, v, angle = 32600.0, 31400.0, 65.0
    image = simulate_ctf_image(size, pixel_size_a, u, v, angle, seed=11, signal_to_noise=0.15)
    rng = np.random.default_rng(5)
    image[:, 1500] += 6.0                                   # hot column
    image[:, 2900:2902] += 4.0
    image[3000, :] = 0.0                                    # dead row
    image += 0.8 * np.sin(2 * np.pi * np.arange(size) / 16.0)[None, :]  # readout stripes
    hits = rng.integers(0, size, size=(300, 2))
    image[hits[:, 0], hits[:, 1]] += 200.0                  # X-rays
    fit = estimate_ctf(image, pixel_size_a, nominal_defocus_a=15000.0)
    assert max(_relative_errors(fit, u, v)) <= 0.02, fit
    assert _angle_error_deg(fit.astigmatism_angle_deg, angle) <= 5.0, fit
    assert fit.pixel_size_fit_a > 1.5  # the spectrum was binned to suit the fit range


def test_phase_shift_is_fitted_when_asked():
    image = simulate_ctf_image(512, 3.0, 10400.0, 9600.0, 20.0, seed=3, phase_shift_deg=70.0)
    fit = estimate_ctf(image, 3.0, fit_phase_shift=True)
    assert abs(fit.phase_shift_deg - 70.0) <= 10.0, fit
    assert max(_relative_errors(fit, 10400.0, 9600.0)) <= 0.03, fit


def test_spectrum_without_thon_rings_is_unreliable_and_falls_back_to_the_nominal_defocus():
    noise = np.random.default_rng(9).normal(size=(512, 512)).astype(np.float32)
    fit = estimate_ctf(noise, 3.0, nominal_defocus_a=25000.0)
    assert not fit.reliable
    assert fit.defocus_u_a == fit.defocus_v_a == 25000.0
    good = estimate_ctf(simulate_ctf_image(512, 3.0, 25000.0, 25000.0, 0.0, seed=2), 3.0,
                        nominal_defocus_a=40000.0)
    assert good.reliable and abs(good.defocus_u_a / 25000.0 - 1) < 0.02


@pytest.mark.parametrize("image, message", [
    (np.zeros((256, 256), np.float32), "constant"),
    (np.full((256, 256), np.nan, np.float32), "NaN"),
    (np.ones((256,), np.float32), "2D image"),
])
def test_unusable_images_are_refused_with_a_clear_message(image, message):
    with pytest.raises(ValueError, match=message):
        estimate_ctf(image, 3.0)
