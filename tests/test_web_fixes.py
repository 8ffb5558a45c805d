"""Issue 18, "wrong or unsafe today": each fix driven in headless Chromium on a simulated
project of two tilt series (the CTF assistant's choice stays on its series, ...)."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from scipy import ndimage
from test_web_browser import OFF_TILT_INDEX, TrueCtf
from web_serving import chromium_page, serve

from tomoweave.api import Project
from tomoweave.engine import Input, Output, ProcessContext, Protocol, Task
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Particle, TiltSeries, Tomogram
from tomoweave.protocols.reconstruct import slices_png

NO_RINGS_SERIES = "TS_02"
MARK_SIZE_XYZ = (96, 64, 32)
MARK_VOXEL_XYZ = (20, 52, 16)  # left and high up (y up), in the central XY slice
MARK_PIXEL_A = 10.0


class MarkedTomogram(Protocol):
    """Test fixture: a noisy tomogram with a bright cube at MARK_VOXEL_XYZ, its run picture made
    by reconstruct's own slices_png, and one particle at the cube."""

    name = "webtest.marked_tomogram"
    outputs = {"tomograms": Output(Tomogram), "particles": Output(Particle)}

    def plan(self, params, inputs) -> list[Task]:
        return [Task(key="MARK", payload={})]

    def process(self, payload, params, context: ProcessContext) -> dict:
        rng = np.random.default_rng(0)
        nx, ny, nz = MARK_SIZE_XYZ
        volume = rng.normal(0, 1, (nz, ny, nx)).astype(np.float32)
        x, y, z = MARK_VOXEL_XYZ
        volume[z - 2:z + 3, y - 2:y + 3, x - 2:x + 3] = 40.0
        path = write_mrc(context.output_path("MARK.mrc"), volume, MARK_PIXEL_A)
        slices_png(volume, context.output_path("MARK_slices.png"), "MARK")
        centre = np.array(MARK_SIZE_XYZ) // 2
        position_a = tuple(float(a) for a in (np.array(MARK_VOXEL_XYZ) - centre) * MARK_PIXEL_A)
        return {"tomograms": Tomogram(name="MARK", path=context.relative(path),
                                      pixel_size_a=MARK_PIXEL_A, size_xyz=MARK_SIZE_XYZ),
                "particles": [Particle(name="MARK_1", tomogram="MARK", position_a=position_a)]}


class NoRingsCtf(Protocol):
    """Test fixture: what ctf.estimate leaves when tilts show no Thon rings: on every other tilt
    of TS_02 (the even ones) the defocus is a stand-in, marked unreliable, one warning per tilt;
    the others of TS_02 and TS_01 keep their (true) CTF."""

    name = "webtest.no_rings_ctf"
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tilt_series": Output(TiltSeries)}

    def process(self, item: TiltSeries, params, context: ProcessContext) -> dict:
        result = item.model_copy(deep=True)
        if item.name == NO_RINGS_SERIES:
            for tilt in result.tilts[::2]:
                tilt.ctf = tilt.ctf.model_copy(update={"defocus_u_a": 30000.0,
                                                       "defocus_v_a": 30000.0, "reliable": False})
                context.warn(f"{item.name} tilt {tilt.tilt_deg:g}°: no usable Thon rings; "
                             f"nominal defocus kept")
        return {"tilt_series": result}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_series(tmp_path_factory):
    register_protocol(TrueCtf)
    register_protocol(NoRingsCtf)
    register_protocol(MarkedTomogram)
    project = Project.init(tmp_path_factory.mktemp("fixes") / "proj")
    simulated = project.run("simulate", params={"preset": "tiny", "n_series": 2},
                            executor="inline")
    with_ctf = project.run(TrueCtf.name, inputs={"tilt_series": f"{simulated.name}.tilt_series"},
                           executor="inline")
    assert simulated.state == with_ctf.state == "finished"
    with serve(project.root) as url:
        yield {"url": url, "project": project, "simulated": simulated, "with_ctf": with_ctf}


@pytest.fixture(scope="module")
def page(two_series):
    with chromium_page() as page:
        yield page


def test_ctf_choice_on_one_series_leaves_the_other_alone(two_series, page):
    """Issue 18.1: unchecking a tilt of TS_02 and accepting drops it from TS_02 only."""
    project, with_ctf = two_series["project"], two_series["with_ctf"]
    series = {s.name: s for s in project.items(with_ctf)}
    assert sorted(series) == ["TS_01", "TS_02"]
    page.goto(two_series["url"] + f"#/ctf/{with_ctf.id}/tilt_series/TS_02")
    expect(page.locator(".page-head h1")).to_contain_text("TS_02")
    box = page.locator('table.data input[type=checkbox][data-index="0"]')
    expect(box).to_be_checked()
    box.uncheck()
    page.click("#assess-button")
    page.wait_for_url("**/#/run/*")
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "finished",
                                                               timeout=45_000)
    run = project.get_run(page.url.rsplit("/", 1)[1])
    assert run.protocol == "ctf.assess" and run.params["series"] == ["TS_02"]
    bad = {s.name: s for s in project.items(run, "bad")}
    angles = {name: [t.tilt_deg for t in s.tilts] for name, s in series.items()}
    # TS_01: only the tilt the rules flag (its defocus is 60 % off); TS_02: that one and tilt 0
    assert [t.tilt_deg for t in bad["TS_01"].tilts] == [angles["TS_01"][OFF_TILT_INDEX]]
    assert sorted(t.tilt_deg for t in bad["TS_02"].tilts) == sorted(
        [angles["TS_02"][0], angles["TS_02"][OFF_TILT_INDEX]])
    good = {s.name: s for s in project.items(run, "good")}
    assert len(good["TS_01"].tilts) == len(angles["TS_01"]) - 1


def test_rerun_of_a_cli_run_keeps_its_input(two_series, page):
    """Issue 18.4: a run given "RUN" (as the CLI and workflows do) re-runs from the form with its
    input selected as RUN.OUTPUT, and the launch works."""
    project, simulated = two_series["project"], two_series["simulated"]
    cli_run = project.run("tiltseries.bin", inputs={"tilt_series": simulated.name},
                          params={"binning": 2}, executor="inline")
    assert cli_run.record.inputs["references"] == {"tilt_series": simulated.name}
    page.goto(two_series["url"] + f"#/run/{cli_run.id}")
    page.click("#rerun-button")
    select = page.locator('[data-field="inputs.tilt_series"] select')
    expect(select).to_have_value(f"{simulated.name}.tilt_series")
    page.fill("#run-name", "rebinned")
    page.fill("#param-binning", "4")
    page.select_option("#run-executor", "inline")
    page.click("#launch-button")
    page.wait_for_url("**/#/run/*")
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "finished",
                                                               timeout=45_000)
    rerun = project.get_run("rebinned")
    assert rerun.record.inputs["references"] == {"tilt_series": f"{simulated.name}.tilt_series"}
    source = project.items(simulated, "tilt_series")[0]
    assert project.items(rerun)[0].pixel_size_a == pytest.approx(4 * source.pixel_size_a)


def test_a_cleared_number_is_an_error_not_the_default(two_series, page):
    """Issue 18.5: emptying a number box stops the launch with an error beside the field that
    names the default; nothing is created."""
    project = two_series["project"]
    runs_before = len(project.runs())
    page.goto(two_series["url"] + "#/new/tiltseries.bin")
    binning = page.locator("#param-binning")
    expect(binning).to_have_value("2")
    binning.fill("")
    page.click("#launch-button")
    expect(page.locator('[data-error-for="params.binning"]')).to_have_text(
        "enter a number (the default is 2)")
    expect(page.locator('[data-field="params.binning"]')).to_have_class("form-row invalid")
    expect(page.locator("#form-error")).to_contain_text("correct the highlighted field")
    assert len(project.runs()) == runs_before
    assert page.url.endswith("#/new/tiltseries.bin")


def test_after_stop_nothing_says_running_or_growing(two_series, page, tmp_path):
    """Issue 18.7: a watching import (it runs until stopped) stopped from its page: its items
    and outputs say stopped, not running / still growing, on the page and in the API."""
    url, simulated = two_series["url"], two_series["simulated"]
    watched = tmp_path / "microscope"
    watched.mkdir()
    source = two_series["project"].root / simulated.folder / "outputs"
    mdoc = sorted(source.rglob("TS_01.mdoc"))[0]
    for path in mdoc.parent.iterdir():  # one series already there: the run has an item and waits
        if path.is_file():
            (watched / path.name).symlink_to(path)
    launched = httpx.post(url + "api/runs", headers={"Origin": url.rstrip("/")}, json={
        "protocol": "import.mdoc", "executor": "inline", "name": "watching",
        "params": {"files": [str(watched / "*.mdoc")], "watch": True, "settle_s": 0,
                   "stop_after_idle_s": 600, "dose_per_tilt_e_a2": 3.0}})
    assert launched.status_code == 200, launched.text
    run_id = launched.json()["id"]
    page.goto(url + f"#/run/{run_id}")
    badge = page.locator(".page-head .badge")
    expect(badge).to_have_attribute("data-state", "running", timeout=30_000)
    expect(page.locator("#run-outputs")).to_contain_text("still growing", timeout=30_000)
    page.click("#stop-button")
    expect(badge).to_have_attribute("data-state", "interrupted", timeout=20_000)
    expect(page.locator("#run-outputs")).not_to_contain_text("still growing")
    expect(page.locator("#run-outputs")).to_contain_text("incomplete: the run stopped")
    expect(page.locator('#journal td.task-state[data-state="running"]')).to_have_count(0)
    details = httpx.get(url + f"api/runs/{run_id}").json()
    assert details["running"] == {}
    assert {o["state"] for o in details["outputs"].values()} == {"stopped"}
    assert all(j["state"] != "running" for j in details["journal"])
    offered = httpx.get(url + "api/outputs", params={"type": "TiltSeries"}).json()
    assert all(o["state"] != "open" for o in offered if o["run_id"] == run_id)


def test_warnings_are_counted_and_unfit_tilts_flagged(two_series, page):
    """Issue 18.6: a run whose items logged warnings shows their number on its badge, on its
    page (per item) and in the graph; tilts without Thon rings are flagged by the assistant."""
    project, url = two_series["project"], two_series["url"]
    warned = project.run(NoRingsCtf.name, inputs={"tilt_series": f"{two_series['with_ctf'].name}"
                                                  ".tilt_series"}, executor="inline")
    assert warned.state == "finished"
    n_all = len({s.name: s for s in project.items(warned)}[NO_RINGS_SERIES].tilts)
    n_tilts = (n_all + 1) // 2  # the even ones: no Thon rings
    page.goto(url)
    node = page.locator(f'svg.graph g.node[data-run="{warned.name}"]')
    expect(node).to_have_attribute("data-warnings", str(n_tilts))
    expect(node.locator("text.warnings")).to_have_text(f"⚠ {n_tilts}")
    expect(page.locator(f'#run-table tr[data-run="{warned.name}"] .warn-badge')).to_have_text(
        f"⚠ {n_tilts} warnings")
    quiet = two_series["with_ctf"].name
    expect(page.locator(f'#run-table tr[data-run="{quiet}"] .warn-badge')).to_have_count(0)

    page.goto(url + f"#/run/{warned.id}")
    expect(page.locator(".page-head .warn-badge")).to_have_text(f"⚠ {n_tilts} warnings")
    expect(page.locator("#run-warnings")).to_contain_text("1 with warnings")
    cells = '#journal tr[data-task="{}"] td[data-warnings]'
    expect(page.locator(cells.format(NO_RINGS_SERIES))).to_have_attribute(
        "data-warnings", str(n_tilts))
    expect(page.locator(cells.format("TS_01"))).to_have_attribute("data-warnings", "0")

    page.goto(url + f"#/ctf/{warned.id}/tilt_series/{NO_RINGS_SERIES}")
    expect(page.locator("#ctf-no-rings")).to_contain_text(f"{n_tilts} without usable Thon rings")
    expect(page.locator("table.data input[type=checkbox]")).to_have_count(n_all)
    unfit = [page.locator(f'table.data input[type=checkbox][data-index="{i}"]')
             for i in range(0, n_all, 2)]
    assert not any(box.is_checked() for box in unfit)
    expect(page.locator("table.data td.flag", has_text="no Thon rings")).to_have_count(n_tilts)
    assessed = project.run("ctf.assess", inputs={"tilt_series": warned.name}, executor="inline")
    bad = {s.name: s for s in project.items(assessed, "bad")}
    angles = [t.tilt_deg for t in {s.name: s for s in project.items(warned)}[
        NO_RINGS_SERIES].tilts]
    assert set(angles[::2]) <= {t.tilt_deg for t in bad[NO_RINGS_SERIES].tilts}  # as the page
    assert len(bad["TS_01"].tilts) == 1  # TS_01: its spoilt tilt only


def _bright_spot(grey: np.ndarray, size: int) -> tuple[float, float]:
    """Where a bright square of about ``size`` pixels sits in a grey picture: the maximum of the
    box-filtered picture (lone bright noise pixels do not win), (column, row)."""
    smooth = ndimage.uniform_filter(grey.astype(np.float32), size)
    row, column = np.unravel_index(np.argmax(smooth), smooth.shape)
    return float(column), float(row)


def test_viewer_and_run_picture_agree_y_up(two_series, page, monkeypatch):
    """Issue 18.3: the tomogram viewer and the run page's picture show a bright cube (and the
    particle marker at it) at the same place: left and high up, y up as in 3dmod. The particle
    comes as binary columns, as a big set's do."""
    from tomoweave.web import routes_viewers

    monkeypatch.setattr(routes_viewers, "INLINE_PARTICLES", 0)
    project, url = two_series["project"], two_series["url"]
    marked = project.run(MarkedTomogram.name, executor="inline")
    nx, ny, _ = MARK_SIZE_XYZ
    x, y, z = MARK_VOXEL_XYZ
    page.goto(url + f"#/run/{marked.id}")
    picture = page.locator(".pictures img").first
    expect(picture).to_be_visible()
    page.wait_for_function("document.querySelector('.pictures img')?.naturalWidth > 0")
    source = project.root / marked.folder / "outputs" / "MARK_slices.png"
    assert picture.get_attribute("src").endswith("MARK_slices.png")
    grey = np.asarray(Image.open(source).convert("L"))
    top = grey[: grey.shape[0] * ny // (ny + MARK_SIZE_XYZ[2])]  # the XY panel is the upper one
    grey_part = top < 250  # the slice is noise, mostly grey; the figure around it is white
    rows = np.nonzero(grey_part.mean(axis=1) > 0.5)[0]  # title text rows are mostly white
    columns = np.nonzero(grey_part[rows].mean(axis=0) > 0.5)[0]
    panel = top[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    assert abs(panel.shape[1] / panel.shape[0] - nx / ny) < 0.05  # found the slice itself
    column, row = _bright_spot(panel, max(3, 5 * panel.shape[1] // nx))
    picture_at = (column / panel.shape[1], row / panel.shape[0])  # fractions from top left
    expected = ((x + 0.5) / nx, 1 - (y + 0.5) / ny)  # y up: row 0 at the bottom
    assert abs(picture_at[0] - expected[0]) < 0.05 and abs(picture_at[1] - expected[1]) < 0.08

    page.goto(url + f"#/tomogram/{marked.id}/tomograms/MARK")
    canvas = page.locator("#slice-canvas")
    page.locator("#slice-slider").fill(str(z))
    expect(canvas).to_have_attribute("data-drawn", "1")
    pixels = np.array(page.evaluate("""() => {
        const c = document.querySelector('#slice-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const grey = [];
        for (let r = 0; r < c.height; r++) {
            const row = [];
            for (let q = 0; q < c.width; q++) row.push(d[4 * (r * c.width + q) + 2]);
            grey.push(row);
        }
        return grey;
    }"""), dtype=np.uint8)  # the blue channel: the cube is white, the orange marker has none
    scale = float(canvas.get_attribute("data-scale"))
    column, row = _bright_spot(pixels, max(3, int(3 * scale)))
    viewer_at = ((column + 0.5) / pixels.shape[1], (row + 0.5) / pixels.shape[0])
    assert abs(viewer_at[0] - expected[0]) < 1.5 / nx and abs(viewer_at[1] - expected[1]) < 1.5 / ny
    marker = page.evaluate("""([fx, fy]) => {
        const c = document.querySelector('#slice-canvas');
        const at = [Math.round(fx * c.width), Math.round(fy * c.height)];
        const d = c.getContext('2d').getImageData(at[0], at[1], 1, 1).data;
        return [d[0], d[1], d[2]];
    }""", list(expected))
    assert marker == [246, 173, 85]  # the particle's centre dot (its set's colour) on the cube


def _text_heights(page) -> list[float]:
    return page.evaluate("[...document.querySelectorAll('svg.graph g.node text.title')]"
                         ".map(t => t.getBoundingClientRect().height)")


def test_a_long_project_graph_is_legible_zooms_and_pans(two_series, page):
    """Issue 18.8: a chain of 12 more runs (the demo's graph was 4708 px squeezed into 904) wraps
    into bands with legible text; zoom, pan and the compact mode work."""
    project, url = two_series["project"], two_series["url"]
    previous = f"{two_series['simulated'].name}.tilt_series"
    for index in range(12):
        previous = f"{project.run('tiltseries.bin', inputs={'tilt_series': previous}, params={'binning': 1}, name=f'chain-{index}', executor='inline').name}.tilt_series"  # noqa: E501
    n_runs = len(project.runs())
    page.goto(url)
    nodes = page.locator("svg.graph g.node")
    expect(nodes).to_have_count(n_runs)
    expect(page.locator("#graph-compact")).to_be_checked()  # more than 12 runs: compact first
    wrap = page.locator("#graph").bounding_box()
    graph = page.locator("svg.graph")
    assert graph.bounding_box()["width"] <= wrap["width"] + 1
    assert int(graph.get_attribute("data-bands")) >= 2
    heights = _text_heights(page)
    assert len(heights) == n_runs and min(heights) >= 9, heights  # not squeezed (was ~2.5 px)
    compact_box = page.locator("svg.graph g.node rect.box").first.bounding_box()

    page.click("#graph-zoom-in")
    expect(graph).to_have_attribute("data-zoom", "1.250")
    assert min(_text_heights(page)) == pytest.approx(1.25 * min(heights), rel=0.05)
    view_box = [float(v) for v in graph.get_attribute("viewBox").split()]
    box = graph.bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 120)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 70, steps=5)
    page.mouse.up()
    panned = [float(v) for v in graph.get_attribute("viewBox").split()]
    assert panned[0] == pytest.approx(view_box[0] + 100 / 1.25, abs=1)
    assert panned[1] == pytest.approx(view_box[1] + 50 / 1.25, abs=1)
    assert page.url.endswith("/")  # the drag did not open a run
    page.click("#graph-fit")
    expect(graph).to_have_attribute("data-zoom", "1.000")

    page.locator("#graph-compact").uncheck()
    expect(page.locator("svg.graph.compact")).to_have_count(0)
    full_box = page.locator("svg.graph g.node rect.box").first.bounding_box()
    assert full_box["height"] > 1.5 * compact_box["height"]
    assert min(_text_heights(page)) >= 9
    names = page.locator("#run-table tr[data-run='chain-0'] td b")
    assert names.evaluate("b => b.querySelectorAll('wbr').length") == 1  # wraps at the '-'


def test_minor_fixes_seen_on_the_demo(two_series, page):
    """Issue 18.15: no "TiltSeriess", defocus always with 3 decimals, the mouse wheel steps the
    tilt viewer, the cursor readout clears when the plane changes, only the newest particle set
    is drawn at first."""
    project, url = two_series["project"], two_series["url"]
    page.goto(url + "#/new/tiltseries.bin")
    listed = page.locator('[data-field="inputs.tilt_series"] select option', has_text="simulate")
    expect(listed).to_have_count(1)
    options = page.locator('[data-field="inputs.tilt_series"] select option').all_text_contents()
    assert any("2 TiltSeries (" in o for o in options) and not any("Seriess" in o for o in options)

    with_ctf = two_series["with_ctf"]
    page.goto(url + f"#/ctf/{with_ctf.id}/tilt_series/TS_01")
    cells = page.locator("table.data tbody tr td:nth-child(3)")
    expect(cells.first).to_be_visible()
    assert all(re.fullmatch(r"\d+\.\d{3}", text) for text in cells.all_text_contents())

    page.goto(url + f"#/tiltseries/{two_series['simulated'].id}/tilt_series/TS_01")
    canvas = page.locator("#tilt-canvas")
    angles = sorted(t.tilt_deg for t in project.items(two_series["simulated"], "tilt_series")[0].tilts)
    expect(canvas).to_have_attribute("data-tilt", f"{angles[len(angles) // 2]:g}")
    canvas.hover()
    page.mouse.wheel(0, 100)
    expect(canvas).to_have_attribute("data-tilt", f"{angles[len(angles) // 2 + 1]:g}")

    older = project.run(MarkedTomogram.name, name="marked-old", executor="inline")
    project.run(MarkedTomogram.name, name="marked-new", executor="inline")
    page.goto(url + f"#/tomogram/{older.id}/tomograms/MARK")
    rows = page.locator("#particle-sets label.set-row")
    expect(rows).to_have_count(len([r for r in project.runs()
                                    if r.protocol == MarkedTomogram.name]))
    boxes = page.locator("#particle-sets label.set-row input")
    assert [boxes.nth(i).is_checked() for i in range(rows.count())][-1] is True
    assert not any(boxes.nth(i).is_checked() for i in range(rows.count() - 1))
    page.locator("#slice-canvas").hover()
    expect(page.locator("#cursor-readout")).to_contain_text("voxel (")
    page.click('.seg button[data-axis="y"]')
    expect(page.locator("#cursor-readout")).to_have_text("Move over the slice for coordinates.")


def test_tomogram_viewer_has_a_scale_bar_in_nm(two_series, page):
    """Issue 18.9 (part): the bar's length is its nm × 10 / (Å per voxel × binning) × scale."""
    project, url = two_series["project"], two_series["url"]
    marked = [r for r in project.runs() if r.protocol == MarkedTomogram.name]
    run = marked[-1] if marked else project.run(MarkedTomogram.name, executor="inline")
    page.goto(url + f"#/tomogram/{run.id}/tomograms/MARK")
    canvas = page.locator("#slice-canvas")
    page.wait_for_selector('#slice-canvas[data-sets]:not([data-sets="-1"])', timeout=20_000)
    nm = float(canvas.get_attribute("data-scale-bar-nm"))
    scale, binning = float(canvas.get_attribute("data-scale")), int(canvas.get_attribute("data-binning"))
    length = nm * 10 / (MARK_PIXEL_A * binning) * scale
    assert float(canvas.get_attribute("data-scale-bar-px")) == pytest.approx(length, abs=0.01)
    width = float(canvas.get_attribute("width"))
    assert width / 10 <= length <= width / 5 + 0.01  # a round length near a fifth of the width
    row = page.evaluate("""() => {
        const c = document.querySelector('#slice-canvas');
        const d = c.getContext('2d').getImageData(0, c.height - 12, c.width, 1).data;
        const white = [];
        for (let i = 0; i < c.width; i++) white.push(d[4 * i] === 255 && d[4 * i + 2] === 255);
        return white;
    }""")
    assert abs(sum(row[:int(12 + length) + 2]) - length) <= 2  # the bar drawn that long
