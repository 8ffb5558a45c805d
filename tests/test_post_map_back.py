"""Map back: copies placed at known poses are compared with the ground-truth scene drawn by the
simulator (sim.templates.add_particle), copy by copy: the shift of the cross-correlation peak
(sub-voxel, parabolic) within 1 voxel and the rotation (parabola through the correlation at
±3° about each axis) within 2° — the issue's acceptance. The ChimeraX script is parsed against
the documented syntax of the commands it uses.
"""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import scipy.fft

from tomoweave.algorithms.postprocess.map_back import chimerax_script, place_copies
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.geometry.rotations import random_rotations
from tomoweave.geometry.sampling import rotations_from_vectors_deg
from tomoweave.sim.oracle import truth_map
from tomoweave.sim.templates import add_particle, load_template

PIXEL_A, BOX, SHAPE = 10.0, 32, (40, 100, 100)
POSITIONS_PX = np.array([[-30.3, -28.0, 2.4], [0.0, -25.6, -3.2], [28.7, -29.1, 1.0],
                         [-27.2, 27.5, -2.0], [1.5, 30.2, 3.7], [29.1, 26.6, 0.0]])


def scene_and_rotations(seed: int = 0):
    rotations = random_rotations(len(POSITIONS_PX), np.random.default_rng(seed))
    scene = np.zeros(SHAPE, np.float32)
    template = load_template("1bxn", PIXEL_A)
    for position, rotation in zip(POSITIONS_PX, rotations, strict=True):
        add_particle(scene, PIXEL_A, template, position * PIXEL_A, rotation, 1.0)
    return scene, rotations


def box_at(volume: np.ndarray, position_px: np.ndarray) -> np.ndarray:
    centre = np.rint(np.asarray(SHAPE[::-1]) // 2 + position_px).astype(int)  # x, y, z
    low = centre - BOX // 2
    return volume[low[2]:low[2] + BOX, low[1]:low[1] + BOX, low[0]:low[0] + BOX]


def peak_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shift (z, y, x) of b relative to a at the cross-correlation peak, parabolic sub-voxel."""
    cc = scipy.fft.irfftn(np.conj(scipy.fft.rfftn(a)) * scipy.fft.rfftn(b), s=a.shape)
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape))
    shift = peak.astype(float)
    for axis in range(3):
        before, after = peak.copy(), peak.copy()
        before[axis] -= 1
        after[axis] = (after[axis] + 1) % BOX
        y0, y1, y2 = cc[tuple(before)], cc[tuple(peak)], cc[tuple(after)]
        shift[axis] += 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return (shift + BOX // 2) % BOX - BOX // 2


def rotation_error_deg(placed: np.ndarray, truth: np.ndarray) -> float:
    """Angle of the small rotation (parabola per axis through ±3°) best turning placed onto truth."""
    def score(vector):
        turned = rotate_volume(placed, rotations_from_vectors_deg(np.asarray([vector]))[0])
        return float(np.sum(turned * truth))

    errors = []
    for axis in np.eye(3):
        minus, zero, plus = score(-3 * axis), score(0 * axis), score(3 * axis)
        errors.append(3.0 * 0.5 * (minus - plus) / (minus - 2 * zero + plus))
    return float(np.linalg.norm(errors))


def test_copies_land_on_their_poses():
    scene, rotations = scene_and_rotations()
    reference = truth_map("1bxn", BOX, PIXEL_A)
    placed = place_copies(SHAPE, reference, POSITIONS_PX, rotations)
    assert placed.shape == SHAPE and placed.dtype == np.float32
    for position in POSITIONS_PX:
        mine, true = box_at(placed, position), box_at(scene, position)
        assert np.linalg.norm(peak_shift(true, mine)) < 1.0
        assert rotation_error_deg(mine, true) < 2.0
    wrong = place_copies(SHAPE, reference, POSITIONS_PX, np.transpose(rotations, (0, 2, 1)))
    correlation = np.corrcoef(placed.ravel(), scene.ravel())[0, 1]
    assert correlation > 0.97
    assert np.corrcoef(wrong.ravel(), scene.ravel())[0, 1] < correlation - 0.2


def test_label_map_marks_each_copy():
    _, rotations = scene_and_rotations(1)
    reference = truth_map("1bxn", BOX, PIXEL_A)
    labels = place_copies(SHAPE, reference, POSITIONS_PX, rotations, mode="label",
                          labels=np.array([3, 3, 1, 2, 1, 2]))
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1, 2, 3}
    copies = place_copies(SHAPE, reference, POSITIONS_PX, rotations, mode="label")
    assert set(np.unique(copies)) == set(range(len(POSITIONS_PX) + 1))
    for index, position in enumerate(POSITIONS_PX, start=1):
        voxels = np.argwhere(copies == index)[:, ::-1]  # x, y, z
        centroid = voxels.mean(0) - np.asarray(SHAPE[::-1]) // 2
        inside = np.argwhere(reference > 0.5 * reference.max())[:, ::-1] - BOX // 2
        expected = position + rotations[index - 1] @ inside.mean(0)
        assert np.linalg.norm(centroid - expected) < 1.0
    with pytest.raises(ValueError, match="6 positions but 2 rotations"):
        place_copies(SHAPE, reference, POSITIONS_PX, rotations[:2])


# ChimeraX user guide (docs/user/commands): the options of each command the script uses
CHIMERAX_COMMANDS = {
    "open": {"format": {"mrc", "ccp4", "images"}},
    "volume": {"style": {"surface", "mesh", "image"}, "level": float, "color": str,
               "voxelSize": float, "transparency": float, "step": int},
    "set": {"bgColor": str},
    "lighting": {"_presets": {"default", "full", "soft", "simple", "flat", "gentle"}},
    "view": {},
}


def parse_cxc(text: str) -> list[tuple[str, list[str]]]:
    commands = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        name, args = words[0], words[1:]
        assert name in CHIMERAX_COMMANDS, f"undocumented command {name}"
        options = CHIMERAX_COMMANDS[name]
        if name == "open":
            args = args[1:]  # the file name
        elif name == "volume":
            assert args[0].startswith("#") and all(p.isdigit() for p in args[0][1:].split(","))
            args = args[1:]
        elif name == "lighting":
            assert len(args) == 1 and args[0] in options["_presets"]
            args = []
        assert len(args) % 2 == 0, line
        for key, value in zip(args[::2], args[1::2], strict=True):
            assert key in options, f"{name}: undocumented option {key}"
            kind = options[key]
            if isinstance(kind, set):
                assert value in kind, f"{name} {key} {value}"
            else:
                kind(value)
        commands.append((name, words[1:]))
    return commands


def test_chimerax_script_uses_documented_syntax():
    text = chimerax_script("tomo.mrc", "map back.mrc", 10.0, level=0.3,
                           particles_file="particles.star")
    commands = parse_cxc(text)
    opened = [args[0] for name, args in commands if name == "open"]
    assert opened == ["tomo.mrc", "map back.mrc"]
    assert ("volume", ["#1,2", "voxelSize", "10"]) in commands
    assert "particles.star" in text
    with pytest.raises(AssertionError):
        parse_cxc("volume #2 contour 0.3\n")
