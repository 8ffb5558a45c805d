"""Issue 18.13: the 3D (isosurface) view of volumes in headless Chromium, on a map with a sphere
at a known off-centre place: its silhouette has the sphere's area, sits where x right / y up put
it, moves to the mirror place after half a turn, and vanishes above the map's maximum."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect
from web_serving import chromium_page, serve

from tomoweave.api import Project
from tomoweave.engine import Output, ProcessContext, Protocol, Task
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Volume
from tomoweave.web import imaging

pytestmark = pytest.mark.browser

SIZE = 48
RADIUS_PX = 8
OFFSET_XYZ = (10, 6, 0)  # the sphere's centre from the box centre, voxels


def sphere_map() -> np.ndarray:
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE]
    cx, cy, cz = (SIZE // 2 + o for o in OFFSET_XYZ)
    inside = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= RADIUS_PX ** 2
    return inside.astype(np.float32)


class SphereMap(Protocol):
    """Test fixture: a Volume item holding sphere_map()."""

    name = "webtest.sphere_map"
    outputs = {"volumes": Output(Volume)}

    def plan(self, params, inputs) -> list[Task]:
        return [Task(key="SPHERE", payload={})]

    def process(self, payload, params, context: ProcessContext) -> dict:
        path = write_mrc(context.output_path("sphere.mrc"), sphere_map(), 5.0)
        return {"volumes": Volume(name="SPHERE", path=context.relative(path), pixel_size_a=5.0,
                                  size_xyz=(SIZE, SIZE, SIZE))}


def test_volume_binned_averages_blocks(tmp_path):
    volume = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    path = write_mrc(tmp_path / "v.mrc", volume, 1.0)
    binned, factor = imaging.volume_binned(path, max_size_px=4)
    assert factor == 2 and binned.shape == (2, 3, 4)
    assert binned[1, 2, 3] == pytest.approx(volume[2:4, 4:6, 6:8].mean())
    whole, factor = imaging.volume_binned(path, max_size_px=8)
    assert factor == 1 and np.array_equal(whole, volume)


def _lit(page) -> tuple[int, float, float]:
    """Lit pixels of the 3D canvas: count and centroid, canvas pixels from its centre (y down)."""
    return tuple(page.evaluate("""() => {
        const c = document.querySelector('#iso-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0, sx = 0, sy = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] <= 40) continue;
            const p = i / 4;
            n++; sx += p % c.width + 0.5; sy += Math.floor(p / c.width) + 0.5;
        }
        return [n, n ? sx / n - c.width / 2 : 0, n ? sy / n - c.height / 2 : 0];
    }"""))


@pytest.fixture(scope="module")
def sphere_page(tmp_path_factory):
    register_protocol(SphereMap)
    project = Project.init(tmp_path_factory.mktemp("volume3d") / "proj")
    run = project.run(SphereMap.name, executor="inline")
    with serve(project.root) as url, chromium_page() as page:
        yield page, url, run


def test_isosurface_of_a_sphere(sphere_page):
    page, url, run = sphere_page
    page.goto(url + f"#/run/{run.id}")
    page.click('a[data-viewer="isosurface"]')
    canvas = page.locator("#iso-canvas")
    expect(canvas).to_have_attribute("data-state", "drawn", timeout=20_000)
    per_px = float(canvas.get_attribute("data-voxels-per-px"))
    n, x, y = _lit(page)
    assert int(canvas.get_attribute("data-hits")) == n
    # nearest-voxel sampling: the silhouette is the sphere's columns of voxels, one voxel² each
    # (the lattice points of the disc); its boundary pixels (~2πR/per_px) are the uncertainty
    columns = sum(1 for i in range(-RADIUS_PX, RADIUS_PX + 1) for j in range(-RADIUS_PX, RADIUS_PX + 1)
                  if i * i + j * j <= RADIUS_PX ** 2)
    expected = columns / per_px ** 2
    assert abs(n - expected) < 0.5 * 2 * np.pi * RADIUS_PX / per_px, (n, expected)
    assert abs(x - OFFSET_XYZ[0] / per_px) < 1 / per_px  # x right
    assert abs(y + OFFSET_XYZ[1] / per_px) < 1 / per_px  # y up

    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 20 + 360, box["y"] + box["height"] / 2, steps=3)  # 0.5°/px: 180°
    page.mouse.up()
    expect(canvas).to_have_attribute("data-yaw", "180")
    n_turned, x_turned, y_turned = _lit(page)
    assert abs(x_turned + OFFSET_XYZ[0] / per_px) < 1 / per_px  # mirrored in x
    assert abs(y_turned - y) < 1 / per_px and abs(n_turned / n - 1) < 0.05

    page.locator("#iso-threshold").fill("10")  # the sphere is ~7σ above the mean: nothing left
    expect(canvas).to_have_attribute("data-hits", "0")
    expect(page.locator("#iso-status")).to_contain_text("nothing above this threshold")
