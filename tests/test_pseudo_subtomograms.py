"""Central-slice insertion and pseudo-subtomograms on exact, hand-made data."""

from __future__ import annotations

import numpy as np
import scipy.fft

from tomoweave.algorithms.averaging import pseudo_subtomograms as pseudo
from tomoweave.algorithms.averaging.insertion import insert_slices
from tomoweave.geometry.projection import particle_in_tilts, projection_matrix
from tomoweave.geometry.rotations import rotation_x

BOX = 24


def _centred_ft(array: np.ndarray) -> np.ndarray:
    return scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(array)))


def test_slices_on_the_grid_are_the_volume_spectrum():
    """A projection along z and one along y (a 90° turn about x) are central slices of the
    volume's spectrum: inserted with transfer 1, data / weight is that spectrum exactly."""
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(BOX,) * 3)
    along_z = volume.sum(axis=0)  # image [y, x]
    rotation = rotation_x(90.0)  # image y = -z of the volume (x stays x)
    along_y = volume.sum(axis=1)[::-1]  # image rows follow -z
    along_y = np.roll(along_y, 1, axis=0)  # index N//2 stays the origin after the flip
    slices = np.stack([_centred_ft(along_z), _centred_ft(along_y)])
    data, weight, multiplicity = insert_slices(slices, np.ones((2, BOX, BOX)),
                                               np.stack([np.eye(3), rotation]))
    spectrum = _centred_ft(volume)
    c = BOX // 2
    scale = np.abs(spectrum).max()  # float32 sums of 24² unit values: rounding ~1e-6 of it
    for plane in (np.s_[c, :, :], np.s_[:, c, :]):  # kz = 0 (first slice), ky = 0 (second)
        hit = multiplicity[plane] > 0.5  # inside the Nyquist circle
        assert hit.sum() > 0.7 * np.pi * c**2
        got = data[plane][hit] / multiplicity[plane][hit]
        assert np.allclose(got, spectrum[plane][hit], atol=1e-5 * scale)
    assert np.allclose(weight, multiplicity)  # transfer 1: Σ w h² = Σ w


def test_a_point_lands_at_the_box_centre():
    """Tilt images holding a point at the projection of a particle (tilted, rotated, shifted
    geometry; sub-pixel positions) give a pseudo-subtomogram peaked at index box // 2."""
    position_a = np.array([37.3, -52.6, 41.9])
    pixel_a = 5.0
    tilts = np.arange(-60, 61, 6.0)
    matrices = np.stack([projection_matrix(t + 0.7, 0.0, 84.0, 13.0 * np.sin(t), -9.0)
                         for t in tilts])
    image_a, _, _ = particle_in_tilts(matrices, position_a)
    size = 96
    images = np.zeros((len(tilts), size, size), dtype=np.float32)
    grid = np.arange(size) - size // 2
    for index, (x_a, y_a) in enumerate(image_a):  # a narrow Gaussian, sub-pixel centred
        gx = np.exp(-0.5 * ((grid - x_a / pixel_a) / 0.8) ** 2)
        gy = np.exp(-0.5 * ((grid - y_a / pixel_a) / 0.8) ** 2)
        images[index] = gy[:, None] * gx[None, :]
    # amplitude contrast 1, no defocus, no Cs: the CTF is -1 everywhere
    count = len(tilts)
    optics = pseudo.TiltSeriesOptics(np.zeros(count), np.zeros(count), np.zeros(count), None,
                                     amplitude_contrast=1.0, spherical_aberration_mm=0.0)
    for binning in (1.0, 2.0):
        result = pseudo.pseudo_subtomogram(images, matrices, optics, pixel_a, position_a, BOX,
                                           binning=binning)
        box = -result.real_space()  # h = -1: the premultiplied data is -Σ X
        peak = np.unravel_index(np.argmax(box), box.shape)
        assert peak == (BOX // 2,) * 3, (binning, peak)
        assert result.pixel_size_a == pixel_a * binning
        # |h| = |cos χ| with χ = π λ height k² (the particle is up to ~60 Å off the focal
        # plane): Σ h² stays within 1 % below the multiplicity
        assert np.all(result.weight <= result.multiplicity * (1 + 1e-5) + 1e-6)
        assert np.all(result.weight >= 0.99 * result.multiplicity - 1e-6)
