"""post.* protocols and import.average on a project: half maps of known B through
import.average → post.sharpen (show --json has resolution_a and bfactor_a2, PNGs written),
post.local_resolution of the average and of even/odd tomograms with a noisier region,
particles.filter_by_local_resolution keeping the particles of the clean region."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from tomoweave.api import Project
from tomoweave.cli import app
from tomoweave.engine import Output, ProcessContext, Protocol, Task, param
from tomoweave.engine.errors import InputError
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.model import Particle, Tomogram
from tomoweave.protocols.postprocess_outputs import (
    GUINIER_PNG,
    HISTOGRAM_PNG,
    LOCAL_RESOLUTION_PNG,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_post_sharpen import BOX, PIXEL_A, atom_map, band_limited, blurred, half_maps  # noqa: E402

BFACTOR_A2 = 150.0


class EvenOddParams(BaseModel):
    folder: str = param(..., help="folder with even.mrc and odd.mrc")


class EvenOddTomogram(Protocol):
    """Test helper: a Tomogram item over even/odd files already written, and particles."""

    name = "test.even_odd_tomogram"
    Params = EvenOddParams
    outputs = {"tomograms": Output(Tomogram), "particles": Output(Particle)}

    def plan(self, params: EvenOddParams, inputs: dict[str, Any]) -> list[Task]:
        return [Task(key="TS_01", payload=params.folder)]

    def process(self, payload: str, params: EvenOddParams,
                context: ProcessContext) -> dict[str, Any]:
        even, pixel = read_mrc(Path(payload) / "even.mrc")
        z, y, x = even.shape
        tomogram = Tomogram(name="TS_01", path=str(Path(payload) / "even.mrc"),
                            pixel_size_a=pixel, size_xyz=(x, y, z),
                            even_path=str(Path(payload) / "even.mrc"),
                            odd_path=str(Path(payload) / "odd.mrc"))
        # x (Å from the centre): clean region x < 40 px, noisy x ≥ 40 px (index)
        particles = [Particle(name=f"p{i}", tomogram="TS_01",
                              position_a=((x_px - x // 2) * pixel, 0.0, 0.0))
                     for i, x_px in enumerate((10, 16, 22, 50, 56))]
        return {"tomograms": tomogram, "particles": particles}


register_protocol(EvenOddTomogram)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("post")
    truth = blurred(atom_map(BOX, 3000, 0.3, 2), BFACTOR_A2)
    half1, half2 = half_maps(truth, 0.1, 12)
    write_mrc(folder / "half1.mrc", half1, PIXEL_A)
    write_mrc(folder / "half2.mrc", half2, PIXEL_A)
    project = Project.init(folder / "proj")
    return project, folder


def test_import_average_and_sharpen(project):
    project, folder = project
    runner = CliRunner()
    result = runner.invoke(app, ["import", "average", str(folder / "half1.mrc"),
                                 str(folder / "half2.mrc"), "--pixel-size", str(PIXEL_A),
                                 "-p", str(project.root), "-n", "imported", "-e", "inline"])
    assert result.exit_code == 0, result.output
    average = project.items("imported", "average")[0]
    assert average.half1_path and average.half2_path and average.bfactor_a2 is None
    run = project.run("post.sharpen", inputs={"average": "imported.average"},
                      params={"particle_diameter_a": 0.7 * BOX * PIXEL_A}, executor="inline",
                      name="sharpened")
    assert run.state == "finished"
    shown = runner.invoke(app, ["show", "sharpened.average", "--json", "-p", str(project.root)])
    assert shown.exit_code == 0, shown.output
    sharpened = json.loads(shown.output)["items"][0]
    assert sharpened["bfactor_a2"] == pytest.approx(BFACTOR_A2, rel=0.15)
    assert 2 * PIXEL_A < sharpened["resolution_a"] < 4 * PIXEL_A
    outputs = project.root / project.get_run("sharpened").folder / "outputs"
    for name in (f"average_{GUINIER_PNG}", "average_fsc.png", "average_sharpened.mrc",
                 "average_mask.mrc"):
        assert (outputs / name).stat().st_size > 1000, name
    sharpened_map, _ = read_mrc(project.path(project.items("sharpened", "average")[0].path))
    assert sharpened_map.shape == (BOX,) * 3


def test_sharpen_refuses_a_volume_as_its_average(project):
    project, folder = project
    run = project.run("import.volume", params={"files": [str(folder / "half1.mrc")]},
                      executor="inline", name="just_a_map")
    assert run.state == "finished"
    with pytest.raises(InputError, match="input 'average' needs Average items"):
        project.run("post.sharpen", inputs={"average": "just_a_map.volume"}, executor="inline")


def test_local_resolution_of_tomograms_and_particle_filter(project):
    project, folder = project
    rng = np.random.default_rng(8)
    shape = (32, 48, 64)
    truth = band_limited(shape, 12.0, rng)
    noisy = np.zeros(shape, np.float32)
    noisy[:, :, 40:] = 2.0
    for kind in ("even", "odd"):
        half = truth + (0.5 + noisy) * rng.normal(size=shape).astype(np.float32)
        write_mrc(folder / f"{kind}.mrc", half, 5.0)
    project.run("test.even_odd_tomogram", params={"folder": str(folder)}, executor="inline",
                name="tomo")
    run = project.run("post.local_resolution", inputs={"tomograms": "tomo.tomograms"},
                      params={"window_px": 16, "step_px": 4}, executor="inline", name="locres")
    assert run.state == "finished"
    volume = project.items("locres", "local_resolution")[0]
    values, _ = read_mrc(project.path(volume.path))
    assert volume.name == "TS_01" and values.shape == shape
    assert np.median(values[:, :, 44:]) > 1.3 * np.median(values[:, :, 4:30])
    outputs = project.root / run.folder / "outputs"
    assert (outputs / f"TS_01_{HISTOGRAM_PNG}").stat().st_size > 1000
    assert (outputs / f"TS_01_{LOCAL_RESOLUTION_PNG}").stat().st_size > 1000
    threshold = float(np.median(values[:, :, 4:30]) * 1.15)
    run = project.run("particles.filter_by_local_resolution",
                      inputs={"particles": "tomo.particles",
                              "local_resolution": "locres.local_resolution"},
                      params={"max_resolution_a": threshold}, executor="inline", name="kept")
    kept = sorted(p.name for p in project.items("kept", "particles"))
    assert kept == ["p0", "p1", "p2"]


def test_local_resolution_of_an_average(project):
    project, _ = project
    run = project.run("post.local_resolution", inputs={"average": "sharpened.average"},
                      params={"window_px": 16, "step_px": 4}, executor="inline",
                      name="locres_average")
    assert run.state == "finished"
    values, _ = read_mrc(project.path(project.items(run, "local_resolution")[0].path))
    inside = values[values > 0]
    assert inside.size > 0 and np.all(values[0] == 0)  # the mask's outside is 0
    assert 2 * PIXEL_A <= np.median(inside) < 6 * PIXEL_A
