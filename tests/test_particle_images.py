"""ParticleImages and load_particle_images: plain and CTF-premultiplied subtomograms on disk."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms import extraction, fourier
from tomoweave.algorithms.averaging.particle_images import (
    ParticleImages,
    load_particle_images,
)
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Particle, Subtomogram

BOX = 16
PIXEL_A = 8.0


def _item(name, path, weight_path, premultiplied=False, box=BOX):
    particle = Particle(name=name, tomogram="TS_01", position_a=(0.0, 0.0, 0.0))
    return Subtomogram(name=name, particle=particle, path=str(path),
                       weight_path=None if weight_path is None else str(weight_path),
                       ctf_premultiplied=premultiplied, pixel_size_a=PIXEL_A, box_size_px=box)


@pytest.fixture()
def boxes(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(3, BOX, BOX, BOX)).astype(np.float32)
    paths = [write_mrc(tmp_path / f"p{i}.mrc", box, PIXEL_A) for i, box in enumerate(data)]
    ctf = extraction.weight_volume(BOX, PIXEL_A, (-60.0, 60.0), {"defocus_a": 30000.0})
    weight_path = write_mrc(tmp_path / "ctf.mrc", ctf, PIXEL_A)
    return data, paths, ctf, weight_path


def test_plain_subtomograms_are_premultiplied_by_their_3d_ctf(boxes):
    data, paths, ctf, weight_path = boxes
    items = [_item(f"p{i}", p, weight_path) for i, p in enumerate(paths)]
    images = load_particle_images(items, lambda p: p)
    ctf_half = fourier.rfft_from_centred_grid(ctf)
    assert len(images) == 3 and images.box_px == BOX and images.pixel_size_a == PIXEL_A
    expected = scipy.fft.rfftn(data[1]) * ctf_half
    # float32 FFT of 16³ values of unit variance: rounding ~ eps · log2(N) · |F|
    scale = np.abs(expected).max()
    assert np.allclose(images.data_ft[1], expected, atol=1e-5 * scale)
    assert np.allclose(images.weight[2], ctf_half**2, atol=1e-6)
    assert images.multiplicity is None
    assert (images.weight[0][ctf_half == 0] == 0).all()  # the missing wedge carries nothing


def test_premultiplied_data_are_taken_as_they_are(boxes, tmp_path):
    data, paths, ctf, _ = boxes
    ctf2 = write_mrc(tmp_path / "ctf2.mrc", ctf**2, PIXEL_A)
    images = load_particle_images([_item("p0", paths[0], ctf2, premultiplied=True)],
                                  lambda p: p)
    assert np.allclose(images.real_space(0), data[0], atol=1e-5)
    assert np.allclose(images.weight[0], fourier.rfft_from_centred_grid(ctf) ** 2, atol=1e-6)


def test_centred_grid_round_trip():
    half = np.random.default_rng(0).random((BOX, BOX, BOX // 2 + 1)).astype(np.float32)
    full = np.abs(scipy.fft.rfftn(np.random.default_rng(1).normal(size=(BOX,) * 3)))
    centred = fourier.centred_grid_from_rfft(full.astype(np.float32), BOX)
    assert np.array_equal(fourier.rfft_from_centred_grid(centred), full.astype(np.float32))
    assert fourier.rfft_from_centred_grid(fourier.centred_grid_from_rfft(half, BOX)).shape == \
        half.shape


def test_batches_by_index_range(boxes):
    data, paths, _, weight_path = boxes
    items = [_item(f"p{i}", p, weight_path) for i, p in enumerate(paths)]
    batch = load_particle_images(items, lambda p: p, indices=slice(1, 3))
    picked = load_particle_images(items, lambda p: p, indices=[2])
    assert len(batch) == 2 and np.array_equal(batch.data_ft[1], picked.data_ft[0])


def test_bad_files_name_the_particle_and_the_field(boxes, tmp_path):
    data, paths, _, _ = boxes
    small = write_mrc(tmp_path / "small.mrc", np.ones((8, 8, 8), np.float32), PIXEL_A)
    with pytest.raises(ValueError, match=r"p0: weight_path .*small.mrc.*expected 16³"):
        load_particle_images([_item("p0", paths[0], small)], lambda p: p)
    with pytest.raises(ValueError, match=r"p0: path .*missing.mrc"):
        load_particle_images([_item("p0", tmp_path / "missing.mrc", None)], lambda p: p)
    with pytest.raises(ValueError, match="data_ft"):
        ParticleImages(np.zeros((1, 4, 4, 3), np.complex64), np.zeros((1, 4, 4, 4), np.float32),
                       None, 1.0)
