"""Phantom tomograms with ground truth for the picking, pruning and extraction tests.

Rotated copies of a real density map (4v4r, the 70S ribosome) placed at known positions, then a
missing wedge and white noise applied in Fourier space, the way a tomogram reconstructed from a
limited tilt range looks. No tests here; the test_pick_* / test_particles_* modules import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.fft

from tomoweave.algorithms.fourier import wedge_mask
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry.rotations import random_rotations

TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "data" / "templates_10A"
if not TEMPLATES.exists():  # CI clones main with shared/ beside it
    TEMPLATES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "templates_10A"


def load_template(name: str = "4v4r", pixel_size_a: float = 10.0, box: int | None = None):
    """A template map from shared/data, rescaled to ``pixel_size_a`` and cropped to ``box``."""
    from tomoweave.algorithms.volumes import crop_or_pad, rescale_volume

    data, source_pixel_a = read_mrc(TEMPLATES / f"{name}.mrc")
    data = rescale_volume(data, source_pixel_a, pixel_size_a)
    return crop_or_pad(data, box) if box else data


def place_particles(shape_zyx, template, count, min_distance_px, rng, margin_px=None):
    """Volume with ``count`` rotated templates at random non-overlapping voxel positions."""
    box = template.shape[0]
    margin = box // 2 if margin_px is None else margin_px
    volume = np.zeros(shape_zyx, dtype=np.float32)
    positions: list[np.ndarray] = []
    for _ in range(count * 200):
        if len(positions) == count:
            break
        candidate = np.array([rng.integers(margin, s - margin) for s in shape_zyx])
        if positions and np.min(np.linalg.norm(np.array(positions) - candidate, axis=1)) < \
                min_distance_px:
            continue
        positions.append(candidate)
    rotations = random_rotations(len(positions), rng)
    for position, rotation in zip(positions, rotations, strict=True):
        _add_box(volume, rotate_volume(template, rotation), position)
    return volume, np.array(positions), rotations


def _add_box(volume, box_data, centre_zyx):
    box = box_data.shape[0]
    source, target = [], []
    for c, size in zip(centre_zyx, volume.shape, strict=True):
        lo = int(c) - box // 2
        s0, s1 = max(0, lo), min(size, lo + box)
        target.append(slice(s0, s1))
        source.append(slice(s0 - lo, s1 - lo))
    volume[tuple(target)] += box_data[tuple(source)]


def degrade(signal, rng, snr, tilt_range_deg=(-60.0, 60.0), contrast=-1.0):
    """Signal (times contrast) plus white noise, both restricted to the tilt range's wedge.

    ``snr`` is the ratio of the signal's variance inside the particles to the noise variance.
    """
    inside = np.abs(signal) > 1e-3 * np.abs(signal).max()
    noise_sigma = np.sqrt(signal[inside].var() / snr)
    noisy = contrast * signal + rng.normal(0, noise_sigma, signal.shape).astype(np.float32)
    weight = wedge_mask(signal.shape, *tilt_range_deg)
    out = scipy.fft.irfftn(scipy.fft.rfftn(noisy) * weight, s=signal.shape)
    return out.astype(np.float32)


def simulated_wbp_tomogram(folder, binning: int = 2, preset: str = "test", seed: int = 0):
    """Simulate ``preset`` and reconstruct it by WBP with the true alignment.

    Returns (tomogram [z, y, x] float32, pixel size Å, SeriesTruth). The tomogram keeps the
    microscope's contrast (protein dark), noise and CTF: what template matching meets.
    """
    from tomoweave.algorithms import reconstruction
    from tomoweave.algorithms.binning import fourier_bin_image
    from tomoweave.sim import simulate_dataset

    data = simulate_dataset(folder, preset, seed=seed, n_series=1)
    series = data.series[0]
    truth = series.truth()
    stack, pixel_size_a = read_mrc(series.stack_path)
    pixel_size_a = (pixel_size_a or truth.pixel_size_a) * binning
    images = [fourier_bin_image(image - image.mean(), binning) for image in stack]
    geometry = reconstruction.make_geometry(truth.projection_matrices(), images[0].shape,
                                            pixel_size_a, truth.thickness_a)
    tomogram = reconstruction.reconstruct_wbp(lambda i: images[i], geometry)
    return tomogram, pixel_size_a, truth
