"""Extraction: particles given at binning 4 land in the box centre at binning 2 and 1.

Positions are Å from the tomogram centre. The particles' true positions are rounded to the
voxel grid of a binning-4 tomogram (what a picker at binning 4 reports), and boxes are cut from
the simulator's noise-free volume at binning 1 and from its Fourier-binned copy at binning 2.
The centre of each particle in its box is measured by cross-correlation with the particle drawn
alone at the box centre (same rotation, same pixel size).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms import extraction, fourier
from tomoweave.sim import resolve_config
from tomoweave.sim.specimen import build_specimen
from tomoweave.sim.templates import add_particle, load_template

BOX_A = 480.0


@pytest.fixture(scope="module")
def truth_volume():
    """The simulator's specimen (test preset): noise-free volume and the placed particles."""
    config = resolve_config("test", beads_on=False, membranes_on=False)
    specimen = build_specimen(config, np.random.default_rng(3))
    return specimen.volume_v, specimen


def _offset_px(box: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Shift (x, y, z) of ``box`` relative to ``reference``, sub-voxel (parabolic peak)."""
    cc = scipy.fft.irfftn(scipy.fft.rfftn(box) * np.conj(scipy.fft.rfftn(reference)), s=box.shape)
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape))
    shift = np.zeros(3)
    for axis in range(3):
        values = [cc[tuple(np.where(np.arange(3) == axis, (peak + d) % cc.shape, peak))]
                  for d in (-1, 0, 1)]
        curvature = values[0] - 2 * values[1] + values[2]
        fraction = 0.5 * (values[0] - values[2]) / curvature if curvature < 0 else 0.0
        shift[axis] = (peak[axis] + fraction + cc.shape[axis] // 2) % cc.shape[axis] \
            - cc.shape[axis] // 2
    return shift[::-1]


@pytest.mark.parametrize("binning", [1, 2])
def test_extraction_centres_particles_picked_at_bin4(truth_volume, binning):
    volume, truth = truth_volume
    pixel_1 = truth.pixel_size_a
    size_xyz = np.array(volume.shape[::-1])
    pixel = pixel_1 * binning
    if binning > 1:
        volume = fourier.fourier_crop(volume, tuple(s // binning for s in volume.shape))
    bin4_pixel = 4 * pixel_1
    ribosomes = [p for p in truth.particles if p.template == "4v4r"]
    box_px = int(BOX_A / pixel) // 2 * 2
    errors = []
    for particle in ribosomes:
        # the voxel of a binning-4 tomogram (centre N // 2) holding the particle, back in Å
        bin4_shape_xyz = size_xyz // 4
        voxel4 = np.rint(np.array(particle.position_a) / bin4_pixel + bin4_shape_xyz // 2)
        picked_a = (voxel4 - bin4_shape_xyz // 2) * bin4_pixel
        box = extraction.extract_particles(volume, pixel, picked_a, box_px, normalise=False)[0]
        offset_a = np.array(particle.position_a) - picked_a  # where the particle really is
        expected = np.zeros((box_px,) * 3, dtype=np.float32)
        add_particle(expected, pixel, load_template("4v4r", pixel), np.zeros(3),
                     np.array(particle.rotation), 1.0)
        # the particle sits at offset_a from the box centre: measure it against the centred copy
        measured = _offset_px(box, expected)
        errors.append(np.linalg.norm(measured - offset_a / pixel))
    print(f"\nbinning {binning}: centring error median {np.median(errors):.3f} px, "
          f"max {np.max(errors):.3f} px over {len(errors)} particles")
    assert np.max(errors) <= 0.5


def test_extraction_binning_parameter_matches_binned_tomogram(truth_volume):
    volume, truth = truth_volume
    particle = next(p for p in truth.particles if p.template == "4v4r")
    from_bin1 = extraction.extract_particles(volume, truth.pixel_size_a,
                                             np.array([particle.position_a]), 24, binning=2.0)[0]
    binned = fourier.fourier_crop(volume, tuple(s // 2 for s in volume.shape))
    from_bin2 = extraction.extract_particles(binned, 2 * truth.pixel_size_a,
                                             np.array([particle.position_a]), 24)[0]
    correlation = np.corrcoef(from_bin1.ravel(), from_bin2.ravel())[0, 1]
    assert correlation > 0.9


def test_weight_volume_is_the_wedge():
    weight = extraction.weight_volume(32, 10.0, (-60.0, 60.0))
    centre = 16
    assert weight[centre, centre, centre] == 1  # zero frequency
    assert weight[centre, centre, centre + 8] == 1  # along x: sampled by the 0° tilt
    assert weight[centre + 8, centre, centre] == 0  # along z: inside the missing wedge
    assert np.allclose(weight, weight[::-1, ::-1, ::-1][np.r_[-1, :31]][:, np.r_[-1, :31]][
        :, :, np.r_[-1, :31]])  # Friedel symmetric about the centre
