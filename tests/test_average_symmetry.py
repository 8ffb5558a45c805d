"""Point-group operators in RELION's conventions, checked against RELION itself.

RELION's ``SymList::fill_symmetry_class`` (src/symmetries.cpp) documents the generators: C<n>
and D<n> have their n-fold along Z, D<n> a two-fold along X, T a three-fold along Z, O a
four-fold along Z and a three-fold along (1, 1, 1), I (= I2) a two-fold along Z and a
five-fold along (0.5257, 0, 0.8507). The decisive test symmetrises a random map with the real
``relion_image_handler --sym`` and checks that every one of our operators leaves it unchanged.
"""

from __future__ import annotations

import shutil
import subprocess

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from tomoweave.algorithms.volumes import rotate_volume, spherical_mask
from tomoweave.geometry.rotations import random_rotations, rotation_x, rotation_z
from tomoweave.geometry.sampling import (
    angular_sampling,
    asymmetric_unit,
    local_sampling,
    orientation_errors_deg,
)
from tomoweave.geometry.symmetry import (
    axis_rotation,
    expand_rotations,
    group_order,
    parse_symmetry,
    symmetry_operators,
)

GROUPS = ["C1", "C2", "C7", "D2", "D7", "T", "O", "I", "I1", "I3", "I4"]


@pytest.mark.parametrize("symbol", GROUPS)
def test_operators_form_a_group_of_rotations(symbol):
    operators = symmetry_operators(symbol)
    assert len(operators) == group_order(symbol)
    assert np.allclose(operators[0], np.eye(3))
    for op in operators:
        assert np.allclose(op @ op.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(op) == pytest.approx(1.0, abs=1e-9)
    # closed under products: every product is (to rounding) one of the operators
    products = np.einsum("aij,bjk->abik", operators, operators).reshape(-1, 1, 3, 3)
    distance = np.abs(products - operators[None]).max(axis=(2, 3)).min(axis=1)
    assert distance.max() < 1e-6


def contains(operators, matrix):
    return np.abs(operators - matrix).max(axis=(1, 2)).min() < 1e-6


def test_axes_follow_relions_documented_generators():
    assert contains(symmetry_operators("C7"), rotation_z(360 / 7))
    d7 = symmetry_operators("D7")
    assert contains(d7, rotation_z(360 / 7)) and contains(d7, rotation_x(180))
    t = symmetry_operators("T")
    assert contains(t, rotation_z(120)) and contains(t, axis_rotation((0, 0.816496, 0.57735), 180))
    o = symmetry_operators("O")
    assert contains(o, rotation_z(90)) and contains(o, axis_rotation((1, 1, 1), 120))
    assert contains(o, rotation_x(90))  # a cube's faces face all three axes
    i2 = symmetry_operators("I")
    assert contains(i2, rotation_z(180))
    assert contains(i2, axis_rotation((0.525731114, 0, 0.850650807), 72))
    assert contains(i2, axis_rotation((0, 0.356822076, 0.934172364), 120))
    assert not contains(i2, rotation_x(180) @ rotation_z(72))
    assert parse_symmetry("i") == ("I2", 60)
    with pytest.raises(ValueError, match="symmetry 'Q3'"):
        parse_symmetry("Q3")


def random_blob_map(box: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.zeros((box,) * 3, dtype=np.float32)
    for _ in range(12):
        volume[tuple(rng.integers(box // 5, box - box // 5, 3))] = rng.uniform(1, 2)
    return ndimage.gaussian_filter(volume, 1.5).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    inside = spherical_mask(a.shape[0], a.shape[0] / 2 - 3) > 0.5
    a, b = a[inside] - a[inside].mean(), b[inside] - b[inside].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("symbol", ["D7", "T", "O", "I", "I1"])
def test_relion_symmetrised_map_is_invariant_under_our_operators(symbol, tmp_path):
    program = shutil.which("relion_image_handler")
    if program is None:
        pytest.skip("relion_image_handler not installed (make test installs Debian's relion)")
    blob = random_blob_map(40)
    source, target = tmp_path / "blob.mrc", tmp_path / f"sym_{symbol}.mrc"
    with mrcfile.new(source) as mrc:
        mrc.set_data(blob)
        mrc.voxel_size = 5.0
    subprocess.run([program, "--i", str(source), "--o", str(target), "--sym", symbol],
                   check=True, capture_output=True)
    relion_map = mrcfile.read(target).astype(np.float32)
    assert correlation(relion_map, blob) < 0.5  # RELION really changed the map
    operators = symmetry_operators(symbol)
    # cubic-spline rotation of a map blurred with sigma 1.5 px: correlation ≥ 0.995
    invariance = [correlation(relion_map, rotate_volume(relion_map, op)) for op in operators]
    assert min(invariance) > 0.995
    ours = np.mean([rotate_volume(blob, op) for op in operators], axis=0)
    assert correlation(ours, relion_map) > 0.995
    # another setting of the same group does not leave it invariant
    other = {"D7": "C14", "T": "O", "O": "I", "I": "I1", "I1": "I"}[symbol]
    if group_order(other) >= len(operators):
        worst = min(correlation(relion_map, rotate_volume(relion_map, op))
                    for op in symmetry_operators(other))
        assert worst < 0.9


@pytest.mark.parametrize("symbol", ["T", "O", "I"])
def test_asymmetric_unit_covers_so3_once(symbol):
    grid = angular_sampling(15.0)
    unit = angular_sampling(15.0, symbol)
    assert len(unit) == pytest.approx(len(grid) / group_order(symbol), rel=0.1)
    probes = random_rotations(200, np.random.default_rng(1))
    # every probe has an equivalent within about the step of some rotation of the unit
    expanded = expand_rotations(unit, symbol).reshape(-1, 3, 3)
    traces = np.einsum("pji,rji->pr", probes, expanded)
    worst = np.degrees(np.arccos(np.clip((traces.max(axis=1) - 1) / 2, -1, 1)))
    assert worst.max() <= 15.0
    assert len(asymmetric_unit(unit, symbol)) == len(unit)


def test_local_sampling_is_a_ball_around_the_identity():
    local = local_sampling(5.0, 15.0)
    assert np.allclose(local[0], np.eye(3))
    angles = orientation_errors_deg(local, np.repeat(np.eye(3)[None], len(local), 0))
    assert angles.max() <= 15.0 + 1e-6
    assert len(local) == 123  # lattice points of a ball of radius 3 steps
    # neighbours one step apart (cubic lattice of rotation vectors)
    pairwise = orientation_errors_deg(np.repeat(local[1:2], len(local), 0), local)
    assert np.sort(pairwise)[1] == pytest.approx(5.0, abs=0.2)


def test_orientation_errors_use_the_symmetry():
    rotation = random_rotations(1, np.random.default_rng(3))[0]
    mate = rotation @ symmetry_operators("D7")[9]
    assert orientation_errors_deg(rotation[None], mate[None], "D7")[0] < 1e-4
    assert orientation_errors_deg(rotation[None], mate[None], "C1")[0] > 10
    expanded = expand_rotations(rotation[None], "O")
    assert expanded.shape == (1, 24, 3, 3)
    assert np.allclose(expanded[0, 0], rotation)
