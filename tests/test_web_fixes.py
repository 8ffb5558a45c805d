"""Issue 18, "wrong or unsafe today": each fix driven in headless Chromium on a simulated
project of two tilt series (the CTF assistant's choice stays on its series, ...)."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect
from test_web_browser import OFF_TILT_INDEX, TrueCtf
from web_serving import chromium_page, serve

from tomoweave.api import Project
from tomoweave.engine.registry import register_protocol

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_series(tmp_path_factory):
    register_protocol(TrueCtf)
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
