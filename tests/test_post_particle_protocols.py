"""post.subtract and post.map_back on a project.

subtract: plain subtomograms (signed 3D CTF, RELION 3.1 style, imported) of a complex with a
planted membrane slab at known poses; the average is imported with import.average and a mask on
the complex with import.volume. The written remainders, loaded as particle images, must have
lost ≥ 90 % of their correlation with the complex and kept ≥ 95 % of their correlation with the
membrane (issue 16's acceptance, through the protocol and its files).
map_back: particles at known poses in an imported tomogram; the placed volume matches the
simulator's scene copy by copy (shift < 1 voxel), in copy and label mode, with a ChimeraX
script in documented syntax and a particle STAR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.fft
from pydantic import BaseModel

from tomoweave.algorithms import extraction
from tomoweave.algorithms.averaging.particle_images import load_particle_images
from tomoweave.algorithms.fourier import rfft_from_centred_grid
from tomoweave.algorithms.postprocess.subtract import map_at_pose
from tomoweave.algorithms.volumes import rotate_volume, soft_mask_from_map
from tomoweave.api import Project
from tomoweave.engine import Output, ProcessContext, Protocol, Task, param
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.formats.relion_subtomograms import write_relion31_subtomograms
from tomoweave.formats.star_io import read_star_blocks
from tomoweave.geometry.rotations import random_rotations
from tomoweave.model import Particle, Subtomogram
from tomoweave.protocols.postprocess_outputs import MAP_BACK_PNG
from tomoweave.sim.oracle import truth_map

sys.path.insert(0, str(Path(__file__).parent))
from test_post_map_back import (  # noqa: E402
    BOX as MAP_BOX,
)
from test_post_map_back import (
    PIXEL_A as MAP_PIXEL_A,
)
from test_post_map_back import (
    POSITIONS_PX,
    SHAPE,
    box_at,
    parse_cxc,
    peak_shift,
    scene_and_rotations,
)
from test_post_subtract import BOX, PIXEL_A, correlation, membrane_slab  # noqa: E402


class ParticlesParams(BaseModel):
    particles: str = param(..., help="JSON list of particles")


class GivenParticles(Protocol):
    """Test helper: particles given as JSON."""

    name = "test.given_particles"
    Params = ParticlesParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params: ParticlesParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key="particles", payload=params.particles)]

    def process(self, payload: str, params: ParticlesParams,
                context: ProcessContext) -> dict[str, Any]:
        return {"particles": [Particle(**p) for p in json.loads(payload)]}


register_protocol(GivenParticles)


def test_subtract_protocol(tmp_path):
    rng = np.random.default_rng(3)
    complex_ = truth_map("1bxn", BOX, PIXEL_A)
    membrane = membrane_slab(BOX, 13.0, 4.0)
    mask = soft_mask_from_map(complex_, 0.02, dilation_px=2, soft_px=3)
    count = 4
    rotations = random_rotations(count, rng)
    items, models = [], []
    for index, rotation in enumerate(rotations):
        ctf = extraction.weight_volume(BOX, PIXEL_A, (-60.0, 60.0),
                                       {"defocus_a": float(rng.uniform(30000, 50000))})
        transfer = rfft_from_centred_grid(ctf)
        particle_box = rotate_volume(complex_ + membrane, rotation)
        observed = scipy.fft.irfftn(scipy.fft.rfftn(particle_box) * transfer, (BOX,) * 3)
        observed = (observed + rng.normal(0, 0.01, observed.shape)).astype(np.float32)
        name = f"p{index}"
        box_path = write_mrc(tmp_path / "sub" / f"{name}.mrc", observed, PIXEL_A)
        ctf_path = write_mrc(tmp_path / "sub" / f"{name}_ctf.mrc", ctf, PIXEL_A)
        particle = Particle(name=name, tomogram="TS_01", position_a=(50.0 * index, 0, 0),
                            rotation=rotation.tolist())
        items.append(Subtomogram(name=name, particle=particle, path=str(box_path),
                                 weight_path=str(ctf_path), pixel_size_a=PIXEL_A,
                                 box_size_px=BOX))
        models.append({part: transfer**2 * map_at_pose(volume, rotation, np.zeros(3))
                       for part, volume in (("complex", complex_), ("membrane", membrane))})
    write_relion31_subtomograms(tmp_path / "particles.star", items, lambda p: p)
    for name, volume in (("half1", complex_ + membrane), ("half2", complex_ + membrane),
                         ("mask", mask)):
        write_mrc(tmp_path / f"{name}.mrc", volume, PIXEL_A)
    project = Project.init(tmp_path / "proj")
    project.run("import.subtomograms", params={"files": [str(tmp_path / "particles.star")]},
                executor="inline", name="imported")
    project.run("import.average", params={"files": [str(tmp_path / "half1.mrc"),
                                                    str(tmp_path / "half2.mrc")]},
                executor="inline", name="average")
    project.run("import.volume", params={"files": [str(tmp_path / "mask.mrc")]},
                executor="inline", name="mask")
    run = project.run("post.subtract", inputs={"subtomograms": "imported.subtomograms",
                                               "average": "average.average",
                                               "mask": "mask.volume"},
                      executor="inline", name="subtracted")
    assert run.state == "finished"
    results = project.items("subtracted", "subtomograms")
    assert [s.name for s in results] == [f"p{i}" for i in range(count)]
    assert all(s.ctf_premultiplied for s in results)
    before = load_particle_images(project.items("imported", "subtomograms"), project.path)
    after = load_particle_images(results, project.path)
    assert np.allclose(after.weight, before.weight, rtol=1e-4, atol=1e-6 * before.weight.max())
    for i in range(count):
        complex_before = correlation(before.data_ft[i], models[i]["complex"])
        assert abs(correlation(after.data_ft[i], models[i]["complex"])) <= 0.1 * complex_before
        membrane_before = correlation(before.data_ft[i], models[i]["membrane"])
        assert correlation(after.data_ft[i], models[i]["membrane"]) >= 0.95 * membrane_before


@pytest.fixture(scope="module")
def map_back_project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mapback")
    scene, rotations = scene_and_rotations(2)
    write_mrc(folder / "TS_01.mrc", scene, MAP_PIXEL_A)
    reference = truth_map("1bxn", MAP_BOX, MAP_PIXEL_A)
    write_mrc(folder / "half.mrc", reference, MAP_PIXEL_A)
    project = Project.init(folder / "proj")
    project.run("import.tomogram", params={"files": [str(folder / "TS_01.mrc")]},
                executor="inline", name="tomo")
    project.run("import.average", params={"files": [str(folder / "half.mrc")] * 2},
                executor="inline", name="average")
    # refined centre = position + shift: the shift must be used
    particles = [{"name": f"p{i}", "tomogram": "TS_01",
                  "position_a": (position * MAP_PIXEL_A - [5.0, 0.0, 0.0]).tolist(),
                  "shift_a": [5.0, 0.0, 0.0], "rotation": rotation.tolist(), "class_id": 1}
                 for i, (position, rotation) in enumerate(zip(POSITIONS_PX, rotations,
                                                              strict=True))]
    project.run("test.given_particles", params={"particles": json.dumps(particles)},
                executor="inline", name="particles")
    return project, scene


@pytest.mark.parametrize("mode", ["copy", "label"])
def test_map_back_protocol(map_back_project, mode):
    project, scene = map_back_project
    run = project.run("post.map_back", inputs={"particles": "particles.particles",
                                               "average": "average.average",
                                               "tomograms": "tomo.tomograms"},
                      params={"mode": mode}, executor="inline", name=f"mapback_{mode}")
    assert run.state == "finished"
    volume_item = project.items(run, "volumes")[0]
    placed, pixel = read_mrc(project.path(volume_item.path))
    assert placed.shape == SHAPE and pixel == pytest.approx(MAP_PIXEL_A)
    for index, position in enumerate(POSITIONS_PX, start=1):
        mine = box_at(placed, position)
        if mode == "label":
            assert set(np.unique(mine)) >= {0, index}
            mine = (mine == index).astype(np.float32)
            true = (box_at(scene, position) > 0.5 * scene.max()).astype(np.float32)
        else:
            true = box_at(scene, position)
        assert np.linalg.norm(peak_shift(true, mine)) < 1.0
    outputs = project.root / run.folder / "outputs"
    assert (outputs / f"TS_01_{MAP_BACK_PNG}").stat().st_size > 1000
    commands = parse_cxc((outputs / "TS_01_mapback.cxc").read_text())
    opened = [args[0] for name, args in commands if name == "open"]
    assert (outputs / opened[0]).resolve() == project.path(
        project.items("tomo", "tomograms")[0].path).resolve()  # relative to the script
    assert opened[1] == "TS_01_mapback.mrc" and (outputs / opened[1]).exists()
    table = read_star_blocks(outputs / "TS_01_particles.star")["particles"]
    assert len(table) == len(POSITIONS_PX)
    corner = POSITIONS_PX[0] + np.asarray(SHAPE[::-1]) // 2
    assert table["rlnCoordinateX"].iloc[0] == pytest.approx(corner[0], abs=1e-3)
