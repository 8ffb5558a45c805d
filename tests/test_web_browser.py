"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): the graph,
a generated form with a field error, a launched run turning finished without a reload, the
tomogram viewer with particles drawn, and a particle picked by clicking found in the project."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright

from tests.test_web_api import (
    PICKS_A,
    PIXEL_SIZE_A,
    TOMOGRAM_SIZE_XYZ,
    make_web_project,
)
from tomoweave.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The web app of a fresh project, served by uvicorn in a thread on a free loopback port."""
    made = make_web_project(tmp_path_factory.mktemp("browser") / "proj")
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
    expect(nodes).to_have_count(3)
    for key in ("imported", "tomograms", "picks"):
        node = page.locator(f'svg.graph g.node[data-run="{served[key].name}"]')
        expect(node).to_have_attribute("data-state", "finished")
    assert page.locator("svg.graph path.edge").count() == 2
    page.screenshot(path=test_output_dir / "1_graph.png", full_page=True)

    page.click("#new-run-button")
    page.click('#protocol-menu a[href="#/new/tiltseries.bin"]')
    binning = page.locator("#param-binning")
    expect(binning).to_have_value("2")
    expect(page.locator('[data-field="inputs.tilt_series"] select')).to_have_value(
        f"{served['imported'].name}.tilt_series")
    binning.fill("64")  # above the declared bound: the server answers 422 naming the field
    page.click("#launch-button")
    error = page.locator('[data-error-for="params.binning"]')
    expect(error).to_contain_text("less than or equal to 32")
    expect(page.locator('[data-field="params.binning"]')).to_have_class("form-row invalid")
    page.screenshot(path=test_output_dir / "2_form_error.png", full_page=True)

    binning.fill("4")
    page.select_option("#run-executor", "inline")
    page.click("#launch-button")
    page.wait_for_url("**/#/run/*")
    badge = page.locator(".page-head .badge")
    expect(badge).to_have_attribute("data-state", "finished", timeout=45_000)
    expect(page.locator("#journal")).to_contain_text("TS_01")
    expect(page.locator("#run-log")).to_contain_text("binned 11 tilts by 4")
    page.screenshot(path=test_output_dir / "3_run_finished.png", full_page=True)

    page.click('a[data-nav="graph"]')
    expect(nodes).to_have_count(4)
    expect(page.locator('svg.graph g.node[data-run="tiltseries.bin"]')).to_have_attribute(
        "data-state", "finished")
    project = served["project"]
    binned = project.items("tiltseries.bin")[0]
    assert binned.pixel_size_a == pytest.approx(4 * PIXEL_SIZE_A)

    page.goto(served["url"] + f"#/tiltseries/{project.get_run('tiltseries.bin').id}"
              f"/tilt_series/TS_01")
    expect(page.locator("#tilt-canvas")).to_have_attribute("data-tilt", "0")
    page.locator("#tilt-slider").fill("2")
    expect(page.locator("#tilt-value")).to_contain_text("-36.0°")
    page.screenshot(path=test_output_dir / "4_tilt_series.png", full_page=True)


def test_tomogram_viewer_draws_and_picks_particles(served, page, test_output_dir):
    tomograms, picks = served["tomograms"], served["picks"]
    page.goto(served["url"] + f"#/tomogram/{tomograms.id}/tomograms/TS_01")
    canvas = page.locator("#slice-canvas")
    # both picks lie in the central XY slice (z = 16 of 32)
    expect(canvas).to_have_attribute("data-drawn", str(len(PICKS_A)))
    page.screenshot(path=test_output_dir / "5_tomogram_particles.png", full_page=True)
    page.click('.seg button[data-axis="y"]')
    expect(page.locator("#slice-value")).to_contain_text("y = 24 / 48")
    page.click('.seg button[data-axis="z"]')
    expect(canvas).to_have_attribute("data-drawn", str(len(PICKS_A)))

    expect(page.locator("#pick-target")).to_have_value(f"{picks.name}.particles")
    page.click("#pick-toggle")
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
    expect(page.locator("#pick-status")).to_have_class("status-line saved", timeout=20_000)
    expect(canvas).to_have_attribute("data-drawn", str(len(PICKS_A) + 1))
    page.screenshot(path=test_output_dir / "6_tomogram_picked.png", full_page=True)

    shown = subprocess.run([sys.executable, "-m", "tomoweave.cli", "show", picks.name, "--json",
                            "-p", str(served["project"].root)],
                           capture_output=True, text=True, check=True)
    details = json.loads(shown.stdout)
    positions = [p["position_a"] for p in details["outputs"]["particles"]["items"]]
    assert len(positions) == len(PICKS_A) + 1 and details["run"]["state"] == "finished"
    nx, ny, nz = TOMOGRAM_SIZE_XYZ
    expected_a = (0.25 * nx * PIXEL_SIZE_A, -0.25 * ny * PIXEL_SIZE_A, 0.0)
    new = positions[-1]
    assert all(abs(a - e) <= 1.5 * PIXEL_SIZE_A for a, e in zip(new, expected_a, strict=True)), new
    assert details["run"]["params"]["picks"]["TS_01"][-1] == new

    # a click on the new particle removes it again
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
    expect(page.locator("#pick-status")).to_contain_text(f"{len(PICKS_A)} picks saved")
    assert len(served["project"].items(picks.name)) == len(PICKS_A)
