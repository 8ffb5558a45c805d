"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) on a
project made by the simulator: the graph, a generated form with a field error, a launched run
turning finished without a reload, the tomogram viewer with the simulator's particles drawn, and
a particle picked by clicking found in the project (`tomoweave show`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright

from tomoweave.api import Project
from tomoweave.engine import Input, Output, ProcessContext, Protocol, Task
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import (
    Acquisition,
    Average,
    FscShell,
    TiltAlignment,
    TiltImage,
    TiltSeries,
    Tomogram,
)
from tomoweave.sim import load_truth
from tomoweave.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class TrueTomogram(Protocol):
    """Test fixture: the simulator's noise-free volume of a series, as a Tomogram item (a real
    reconstruction would take longer than this whole test may)."""

    name = "webtest.true_tomogram"
    label = "Simulated true volume (test)"
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tomograms": Output(Tomogram)}

    def process(self, item: TiltSeries, params, context: ProcessContext) -> dict:
        outputs_dir = context.resolve(item.mdoc_path).parent
        truth = load_truth(outputs_dir / "truth" / f"{item.name}.json")
        return {"tomograms": Tomogram(
            name=item.name, path=context.relative(outputs_dir / truth.volume_file),
            pixel_size_a=truth.pixel_size_a, size_xyz=truth.tomogram_size_xyz,
            tilt_series=item.name, method="simulated truth")}


OFF_TILT_INDEX = 3  # this tilt's defocus is made 60 % too high: the assistant must flag it


class TrueCtf(Protocol):
    """Test fixture: the simulator's true CTF on every tilt, one tilt spoilt, with a diagnostic
    picture for the spoilt tilt (what ctf.estimate would leave)."""

    name = "webtest.true_ctf"
    label = "Simulated true CTF (test)"
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tilt_series": Output(TiltSeries)}

    def process(self, item: TiltSeries, params, context: ProcessContext) -> dict:
        from PIL import Image

        truth = load_truth(context.resolve(item.mdoc_path).parent / "truth" / f"{item.name}.json")
        result = item.model_copy(deep=True)
        for index, (tilt, ctf) in enumerate(zip(result.tilts, truth.ctf_tilts(), strict=True)):
            if index == OFF_TILT_INDEX:
                diagnostic = context.output_path(f"{item.name}_{index:03d}_ctf.png")
                Image.fromarray(np.full((40, 80), 200, np.uint8)).save(diagnostic)
                ctf = ctf.model_copy(update={"defocus_u_a": ctf.defocus_u_a * 1.6,
                                             "defocus_v_a": ctf.defocus_v_a * 1.6,
                                             "diagnostic_path": context.relative(diagnostic)})
            tilt.ctf = ctf
        return {"tilt_series": result}


class TrueAverage(Protocol):
    """Test fixture: an Average item on the simulator's volume with a made-up FSC curve."""

    name = "webtest.true_average"
    inputs = {"tomograms": Input(Tomogram)}
    outputs = {"averages": Output(Average)}

    def process(self, item: Tomogram, params, context: ProcessContext) -> dict:
        frequency = np.linspace(0, 0.5 / item.pixel_size_a, 20)
        fsc = 1 / (1 + np.exp((frequency * item.pixel_size_a - 0.3) * 30))
        shells = [FscShell(shell=i, frequency_inv_a=f, resolution_a=1 / f if f else None,
                           fsc=c) for i, (f, c) in enumerate(zip(frequency, fsc, strict=True))]
        return {"averages": Average(
            name=f"{item.name}_average", path=item.path, pixel_size_a=item.pixel_size_a,
            size_xyz=item.size_xyz, fsc=shells,
            resolution_a=item.pixel_size_a / 0.36, particle_count=4)}


DOT_ALIGNED_A = (100.0, 50.0)  # where the dot is in the aligned frame (tilt axis along Y)
DOT_Z_ROT_DEG = 25.0
DOT_SHIFTS_A = [(40.0, -60.0), (-30.0, 20.0), (10.0, 70.0)]


class AlignedDots(Protocol):
    """Test fixture: 3 tilts of 64² px at 10 Å/px, each with one bright dot placed where the
    projection model (image = Rz · aligned + shift) puts the aligned point DOT_ALIGNED_A."""

    name = "webtest.aligned_dots"
    outputs = {"tilt_series": Output(TiltSeries)}

    def plan(self, params, inputs) -> list[Task]:
        return [Task(key="DOTS", payload={})]

    def process(self, payload, params, context: ProcessContext) -> dict:
        angle = np.radians(DOT_Z_ROT_DEG)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        stack = np.zeros((3, 64, 64), np.float32)
        tilts = []
        for index, (shift, tilt_deg) in enumerate(zip(DOT_SHIFTS_A, (-30, 0, 30), strict=True)):
            x, y = np.rint((rotation @ DOT_ALIGNED_A + shift) / 10.0 + 32).astype(int)
            stack[index, y - 1:y + 2, x - 1:x + 2] = 10.0
            tilts.append(TiltImage(tilt_deg=tilt_deg, acquisition_order=index, image_index=index,
                                   alignment=TiltAlignment(y_tilt_deg=tilt_deg,
                                                           z_rot_deg=DOT_Z_ROT_DEG,
                                                           shift_x_a=shift[0],
                                                           shift_y_a=shift[1])))
        path = write_mrc(context.output_path("DOTS.mrc"), stack, 10.0)
        for tilt in tilts:
            tilt.image_path = context.relative(path)
        return {"tilt_series": TiltSeries(name="DOTS", acquisition=Acquisition(pixel_size_a=10.0),
                                          image_size_xy=(64, 64), tilts=tilts)}


def make_simulated_project(root):
    register_protocol(TrueTomogram)
    register_protocol(TrueAverage)
    register_protocol(TrueCtf)
    project = Project.init(root)
    simulated = project.run("simulate", params={"preset": "tiny"}, executor="inline")
    tomograms = project.run(TrueTomogram.name, inputs={"tilt_series": f"{simulated.name}"
                                                      ".tilt_series"}, executor="inline")
    with_ctf = project.run(TrueCtf.name, inputs={"tilt_series": f"{simulated.name}"
                                                 ".tilt_series"}, executor="inline")
    assert simulated.state == tomograms.state == with_ctf.state == "finished"
    return {"project": project, "simulated": simulated, "tomograms": tomograms,
            "with_ctf": with_ctf,
            "particles": project.items(simulated, "true_particles"),
            "tomogram": project.items(tomograms)[0]}


_SIMULATED: dict = {}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The web app of a fresh project, served by uvicorn in a thread on a free loopback port."""
    # xdist spreads these tests over workers and may tear module fixtures down between them:
    # simulate once per worker process; every test below works on whatever runs exist
    if "made" not in _SIMULATED:
        _SIMULATED["made"] = make_simulated_project(tmp_path_factory.mktemp("browser") / "proj")
    made = _SIMULATED["made"]
    port = _free_port()
    config = uvicorn.Config(create_app(made["project"].root), host="127.0.0.1", port=port,
                            log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 20
    while True:
        try:
            httpx.get(url + "api/project", timeout=1).raise_for_status()
            break
        except httpx.TransportError:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.1)
    yield {"url": url, **made}
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(served):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        browser.close()
        assert not errors, f"JavaScript errors: {errors}"


def test_graph_form_launch_and_live_state(served, page, test_output_dir):
    page.goto(served["url"])
    nodes = page.locator("svg.graph g.node")
    runs_before = len(served["project"].runs())
    expect(nodes).to_have_count(runs_before)
    for key in ("simulated", "tomograms", "with_ctf"):
        node = page.locator(f'svg.graph g.node[data-run="{served[key].name}"]')
        expect(node).to_have_attribute("data-state", "finished")
    assert page.locator("svg.graph path.edge").count() >= 2
    page.screenshot(path=test_output_dir / "1_graph.png", full_page=True)

    page.click("#new-run-button")
    page.click('#protocol-menu a[href="#/new/tiltseries.bin"]')
    binning = page.locator("#param-binning")
    expect(binning).to_have_value("2")
    tilt_input = page.locator('[data-field="inputs.tilt_series"] select')
    newest = httpx.get(served["url"] + "api/outputs", params={"type": "TiltSeries"}).json()[0]
    expect(tilt_input).to_have_value(newest["reference"])  # what was made last comes first
    tilt_input.select_option(f"{served['simulated'].name}.tilt_series")
    binning.fill("64")  # above the declared bound: the server answers 422 naming the field
    page.click("#launch-button")
    error = page.locator('[data-error-for="params.binning"]')
    expect(error).to_contain_text("less than or equal to 32")
    expect(page.locator('[data-field="params.binning"]')).to_have_class("form-row invalid")
    page.screenshot(path=test_output_dir / "2_form_error.png", full_page=True)

    binning.fill("2")
    page.select_option("#run-executor", "inline")
    page.click("#launch-button")
    page.wait_for_url("**/#/run/*")
    badge = page.locator(".page-head .badge")
    expect(badge).to_have_attribute("data-state", "finished", timeout=45_000)
    expect(page.locator("#journal")).to_contain_text("TS_01")
    n_tilts = len(served["project"].items(served["simulated"], "tilt_series")[0].tilts)
    expect(page.locator("#run-log")).to_contain_text(f"binned {n_tilts} tilts by 2")
    page.screenshot(path=test_output_dir / "3_run_finished.png", full_page=True)

    run_id = int(page.url.rsplit("/", 1)[1])
    page.click('a[data-nav="graph"]')
    expect(nodes).to_have_count(runs_before + 1)
    project = served["project"]
    launched = project.get_run(str(run_id))
    expect(page.locator(f'svg.graph g.node[data-run="{launched.name}"]')).to_have_attribute(
        "data-state", "finished")
    binned = project.items(launched)[0]
    simulated = project.items(served["simulated"], "tilt_series")[0]
    assert binned.pixel_size_a == pytest.approx(2 * simulated.pixel_size_a)
    page.screenshot(path=test_output_dir / "4_graph_after_launch.png", full_page=True)

    page.goto(served["url"] + f"#/tiltseries/{served['simulated'].id}/tilt_series/TS_01")
    expect(page.locator("#tilt-canvas")).to_have_attribute("data-tilt", "0")
    page.locator("#tilt-slider").fill("0")
    lowest = min(t.tilt_deg for t in simulated.tilts)
    expect(page.locator("#tilt-value")).to_contain_text(f"{lowest:.1f}°")
    page.screenshot(path=test_output_dir / "5_tilt_series.png", full_page=True)


def _voxel(position_a, size, pixel_size_a):
    return [round(a / pixel_size_a + n // 2) for a, n in zip(position_a, size, strict=True)]


def test_tomogram_viewer_draws_and_picks_particles(served, page, test_output_dir):
    tomograms, tomogram = served["tomograms"], served["tomogram"]
    size, pixel_size_a = tomogram.size_xyz, tomogram.pixel_size_a
    page.goto(served["url"] + f"#/tomogram/{tomograms.id}/tomograms/TS_01")
    canvas = page.locator("#slice-canvas")
    expect(page.locator("#particle-sets")).to_contain_text(
        f"{len(served['particles'])} particles")
    # go to the slice of the first simulated particle: it (at least) is drawn there
    z = _voxel(served["particles"][0].position_a, size, pixel_size_a)[2]
    page.locator("#slice-slider").fill(str(z))
    expect(page.locator("#slice-value")).to_contain_text(f"z = {z} / {size[2]}")
    window_px = 4
    expected = sum(1 for p in served["particles"]
                   if abs(p.position_a[2] / pixel_size_a + size[2] // 2 - z) <= window_px + 0.5)
    expect(canvas).to_have_attribute("data-drawn", str(expected))
    assert expected >= 1
    page.screenshot(path=test_output_dir / "6_tomogram_particles.png", full_page=True)
    page.click('.seg button[data-axis="y"]')
    expect(page.locator("#slice-value")).to_contain_text(f"y = {size[1] // 2} / {size[1]}")
    page.screenshot(path=test_output_dir / "7_tomogram_xz.png", full_page=True)
    page.click('.seg button[data-axis="z"]')

    expect(page.locator("#pick-target")).to_have_value("")  # no pick run yet: a new one
    page.click("#pick-toggle")
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
    status = page.locator("#pick-status")
    expect(status).to_have_class("status-line saved", timeout=20_000)
    expect(canvas).to_have_attribute("data-drawn", str(expected + 1))
    page.screenshot(path=test_output_dir / "8_tomogram_picked.png", full_page=True)

    run_name = status.get_attribute("data-run")
    shown = subprocess.run([sys.executable, "-m", "tomoweave.cli", "show", run_name, "--json",
                            "-p", str(served["project"].root)],
                           capture_output=True, text=True, check=True)
    details = json.loads(shown.stdout)
    assert details["run"]["protocol"] == "pick.manual" and details["run"]["state"] == "finished"
    assert details["run"]["inputs"] == {"tomograms": f"{tomograms.name}.tomograms"}
    positions = [p["position_a"] for p in details["outputs"]["particles"]["items"]]
    assert len(positions) == 1
    expected_a = (0.25 * size[0] * pixel_size_a, 0.25 * size[1] * pixel_size_a,  # y up
                  (z - size[2] // 2) * pixel_size_a)
    assert all(abs(a - e) <= 1.5 * pixel_size_a
               for a, e in zip(positions[0], expected_a, strict=True)), positions
    assert details["outputs"]["particles"]["items"][0]["tomogram"] == "TS_01"

    # a second click on the new particle removes it again, through the same run
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
    expect(status).to_contain_text(f"0 picks saved in run {run_name}")
    assert served["project"].items(run_name) == []


def test_ctf_assistant_flags_and_splits_tilts(served, page, test_output_dir):
    project, with_ctf = served["project"], served["with_ctf"]
    series = project.items(with_ctf)[0]
    page.goto(served["url"] + f"#/ctf/{with_ctf.id}/tilt_series/TS_01")
    def keep_box(index):
        return page.locator(f'table.data input[type=checkbox][data-index="{index}"]')

    expect(page.locator("table.data input[type=checkbox]")).to_have_count(len(series.tilts))
    checked = [keep_box(i).is_checked() for i in range(len(series.tilts))]
    assert checked == [i != OFF_TILT_INDEX for i in range(len(series.tilts))]  # only it flagged
    page.locator(f'table.data tbody tr[data-index="{OFF_TILT_INDEX}"] td').nth(1).click()
    diagnostic = page.locator("#ctf-diagnostic")
    expect(diagnostic).to_be_visible()
    page.wait_for_function("document.querySelector('#ctf-diagnostic').naturalWidth === 80")
    keep_box(0).uncheck()  # the person rejects one more
    page.screenshot(path=test_output_dir / "9_ctf_assistant.png", full_page=True)
    page.click("#assess-button")
    page.wait_for_url("**/#/run/*")
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "finished",
                                                               timeout=45_000)
    run_id = int(page.url.rsplit("/", 1)[1])
    run = project.get_run(str(run_id))
    assert run.protocol == "ctf.assess" and run.params["by"] == "index"
    bad = project.items(run, "bad")[0]
    good = project.items(run, "good")[0]
    rejected = {series.tilts[0].tilt_deg, series.tilts[OFF_TILT_INDEX].tilt_deg}
    assert {t.tilt_deg for t in bad.tilts} == rejected
    assert len(good.tilts) == len(series.tilts) - 2
    assert not rejected & {t.tilt_deg for t in good.tilts}


def test_average_viewer_shows_slices_and_fsc(served, page, test_output_dir):
    project = served["project"]
    averages = project.run(TrueAverage.name, inputs={"tomograms": served["tomograms"].name},
                           executor="inline")
    page.goto(served["url"] + f"#/run/{averages.id}")
    page.click('a[data-viewer="average"]')
    expect(page.locator("#fsc-plot")).to_be_visible()
    for axis in ("z", "y", "x"):
        page.wait_for_function(
            f"document.querySelector('img[data-axis=\"{axis}\"]').naturalWidth > 0")
    size = served["tomogram"].size_xyz
    widths = page.evaluate("[...document.querySelectorAll('img[data-axis]')]"
                           ".map(i => [i.naturalWidth, i.naturalHeight])")
    assert widths == [[size[0], size[1]], [size[0], size[2]], [size[1], size[2]]]
    expect(page.locator(".page-head")).to_contain_text("FSC 0.143")
    page.screenshot(path=test_output_dir / "10_average.png", full_page=True)


def _white_centroid(page) -> tuple[float, float]:
    """Centroid of the white pixels of the tilt canvas (the dot), canvas pixels from its centre."""
    return tuple(page.evaluate("""() => {
        const c = document.querySelector('#tilt-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let sx = 0, sy = 0, n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] > 230 && d[i + 1] > 230 && d[i + 2] > 230) {
                const p = i / 4; sx += p % c.width; sy += Math.floor(p / c.width); n++;
            }
        }
        return [sx / n + 0.5 - c.width / 2, sy / n + 0.5 - c.height / 2];
    }"""))


def test_tilt_viewer_applies_the_alignment(served, page, test_output_dir):
    register_protocol(AlignedDots)
    dots = served["project"].run(AlignedDots.name, executor="inline")
    page.goto(served["url"] + f"#/tiltseries/{dots.id}/tilt_series/DOTS")
    expect(page.locator(".page-head h1")).to_have_text("Tilt series DOTS")  # not a previous page
    canvas = page.locator("#tilt-canvas")
    for position, shift in ((0, DOT_SHIFTS_A[0]), (2, DOT_SHIFTS_A[2])):
        page.locator("#tilt-slider").fill(str(position))
        expect(canvas).to_have_attribute("data-tilt", str((-30, 0, 30)[position]))
        scale = float(canvas.get_attribute("data-scale"))
        expect(page.locator("#apply-alignment")).to_be_checked()
        x, y = _white_centroid(page)  # aligned: the dot sits at its aligned position
        assert abs(x - scale * DOT_ALIGNED_A[0] / 10) < 0.6 * scale, (x, y, scale)
        assert abs(-y - scale * DOT_ALIGNED_A[1] / 10) < 0.6 * scale, (x, y, scale)  # y up
        page.screenshot(path=test_output_dir / f"11_aligned_{position}.png")
        page.locator("#apply-alignment").uncheck()
        expect(canvas).to_have_attribute("data-aligned", "false")
        angle = np.radians(DOT_Z_ROT_DEG)
        raw = (np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
               @ DOT_ALIGNED_A + shift) / 10
        x, y = _white_centroid(page)  # raw: where the microscope recorded it
        assert abs(x - scale * raw[0]) < 0.8 * scale and abs(-y - scale * raw[1]) < 0.8 * scale
        page.locator("#apply-alignment").check()


def test_form_leaves_optional_parameters_unset(served, page):
    """Optional (None) parameters mean 'the protocol decides': the form must send null, not
    false or the first choice."""
    sent = []

    def capture(route):
        sent.append(json.loads(route.request.post_data))
        route.fulfill(status=422, content_type="application/json", body=json.dumps(
            {"detail": {"message": "params.seed: too odd",
                        "errors": [{"field": "params.seed", "message": "too odd"}]}}))

    page.route("**/api/runs", capture)
    try:
        page.goto(served["url"] + "#/new/simulate")
        expect(page.locator(".page-head h1")).to_contain_text("Simulate tilt series")
        page.select_option("#param-beads_on", "no")
        page.fill("#param-tilt_step_deg", "5")
        page.click("#launch-button")
        expect(page.locator('[data-error-for="params.seed"]')).to_have_text("too odd")
    finally:
        page.unroute("**/api/runs")
    params = sent[0]["params"]
    assert params["particles_on"] is None and params["tilt_scheme"] is None
    assert params["n_series"] is None and params["exclude_templates"] == []
    assert params["beads_on"] is False and params["tilt_step_deg"] == 5
    assert params["preset"] == "test" and params["seed"] == 0  # declared defaults
