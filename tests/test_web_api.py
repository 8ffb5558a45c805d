"""Web API: file access confined to the project, the token on non-loopback binds, 422 naming the
field for malformed parameters, slices served at the right place, picks saved through a run."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import BaseModel

from tests.conftest import write_stack
from tomoweave.api import Project
from tomoweave.engine import Input, Output, ProcessContext, Protocol, param
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import write_mrc
from tomoweave.inspect_project import show
from tomoweave.model import TiltSeries, Tomogram
from tomoweave.web import create_app
from tomoweave.web.security import is_loopback

TOMOGRAM_SIZE_XYZ = (64, 48, 32)
PIXEL_SIZE_A = 10.0
# bright blobs at these voxels (x, y, z): what the slices must show where they are
BLOBS_XYZ = [(20, 12, 16), (44, 30, 16), (32, 24, 8)]
PICKS_A = [[(x - n // 2) * PIXEL_SIZE_A for x, n in zip(b, TOMOGRAM_SIZE_XYZ, strict=True)]
           for b in BLOBS_XYZ[:2]]


class PhantomParams(BaseModel):
    blob_radius_a: float = param(30.0, gt=0, unit="Å", help="radius of the bright blobs")


class PhantomTomogram(Protocol):
    """Test fixture: a 'reconstruction' that writes a phantom volume with blobs at known voxels."""

    name = "webtest.phantom_tomogram"
    label = "Phantom tomogram (test)"
    Params = PhantomParams
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tomograms": Output(Tomogram)}

    def process(self, item: TiltSeries, params: PhantomParams,
                context: ProcessContext) -> dict[str, Any]:
        nx, ny, nz = TOMOGRAM_SIZE_XYZ
        z, y, x = np.mgrid[:nz, :ny, :nx]
        volume = np.random.default_rng(1).normal(0, 0.2, (nz, ny, nx)).astype(np.float32)
        radius_px = params.blob_radius_a / PIXEL_SIZE_A
        for bx, by, bz in BLOBS_XYZ:
            volume[(x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2 <= radius_px ** 2] += 5.0
        path = context.output_path(f"{item.name}.mrc")
        write_mrc(path, volume, PIXEL_SIZE_A)
        return {"tomograms": Tomogram(name=item.name, path=context.relative(path),
                                      pixel_size_a=PIXEL_SIZE_A, size_xyz=TOMOGRAM_SIZE_XYZ,
                                      tilt_series=item.name, method="phantom")}


def make_web_project(root: Path) -> dict[str, Any]:
    """A project with imported tilt series, phantom tomograms and a pick.manual run."""
    register_protocol(PhantomTomogram)
    stack = write_stack(root.parent / f"{root.name}_data" / "TS_01.mrc", 11, (64, 64),
                        PIXEL_SIZE_A)
    project = Project.init(root)
    imported = project.run("import.tiltseries", params={"files": [str(stack)]},
                           executor="inline")
    tomograms = project.run(PhantomTomogram.name, inputs={"tilt_series": imported.name},
                            executor="inline")
    picks = project.run("pick.manual", inputs={"tomograms": tomograms.name},
                        params={"picks": {"TS_01": PICKS_A}}, executor="inline")
    assert (imported.state, tomograms.state, picks.state) == ("finished",) * 3
    return {"project": project, "imported": imported, "tomograms": tomograms, "picks": picks,
            "stack": stack}


@pytest.fixture(scope="module")
def web_project(tmp_path_factory) -> dict[str, Any]:
    return make_web_project(tmp_path_factory.mktemp("web") / "proj")


LOCAL = "http://127.0.0.1"


def local_client(app) -> TestClient:
    """A client that talks to the app as the GUI's own page does (loopback Host, same Origin)."""
    return TestClient(app, base_url=LOCAL, headers={"Origin": LOCAL})


@pytest.fixture(scope="module")
def client(web_project) -> TestClient:
    # the import links to a stack outside the project: its folder is allowed, as a user would
    return local_client(create_app(web_project["project"].root,
                                   allowed_dirs=[web_project["stack"].parent]))


def test_paths_outside_the_project_are_refused(client, web_project, tmp_path):
    root = web_project["project"].root
    outside = root.parent / "secret.png"
    outside.write_bytes(b"not for you")
    (root / "runs" / "note.png").write_bytes(b"inside")
    for path in ("../secret.png", "runs/../../secret.png", "runs/%2e%2e/%2e%2e/secret.png",
                 str(outside), "/etc/passwd", "..\\secret.png"):
        response = client.get("/api/file", params={"path": path})
        assert response.status_code in (403, 404), (path, response.status_code)
        assert b"not for you" not in response.content
    assert client.get("/api/file", params={"path": "../secret.png"}).status_code == 403
    assert client.get("/api/file", params={"path": str(outside)}).status_code == 403
    for endpoint in ("/api/volume/slice", "/api/image", "/api/volume/info", "/api/volume/data"):
        assert client.get(endpoint, params={"path": "../x.mrc"}).status_code == 403
        assert client.get(endpoint, params={"path": "/etc/hostname"}).status_code == 403
    assert client.get("/api/file", params={"path": "runs/nothing.png"}).status_code == 404
    assert client.get("/api/file", params={"path": "project.sqlite"}).status_code == 415
    inside = client.get("/api/file", params={"path": "runs/note.png"})
    assert inside.status_code == 200 and inside.content == b"inside"
    # an import's link to the microscope's stack is the project's own data: served
    series = web_project["project"].items(web_project["imported"])[0]
    tilt = series.tilts[0]
    assert (root / tilt.image_path).is_symlink()
    image = client.get("/api/image", params={"path": tilt.image_path, "index": 3, "binning": 1})
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (64, 64)


def test_token_is_required_when_set():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_token_protects_every_request(web_project):
    app = create_app(web_project["project"].root, token="s3cret-token")
    with local_client(app) as anonymous:
        for path in ("/", "/api/graph", "/static/app.js", "/api/protocols"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/api/graph", headers={"Authorization": "Bearer wrong"}
                             ).status_code == 401
        assert anonymous.post("/api/runs", json={"protocol": "tiltseries.bin"}).status_code == 401
        assert anonymous.get("/api/graph", headers={"Authorization": "Bearer s3cret-token"}
                             ).status_code == 200
    with local_client(app) as browser:
        first = browser.get("/?token=s3cret-token", follow_redirects=False)
        assert first.status_code == 303 and "token" not in first.headers["location"]
        assert browser.get("/api/graph").status_code == 200  # the cookie carries it now


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_on_all_interfaces_generates_a_token(web_project):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tomoweave.cli", "serve", "-p", str(web_project["project"].root),
         "--host", "0.0.0.0", "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        banner = server.stderr.readline()
        assert "?token=" in banner, banner
        token = banner.strip().rsplit("?token=", 1)[1]
        url = f"http://127.0.0.1:{port}/api/graph"
        deadline = time.time() + 20
        while True:
            try:
                refused = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.2)
        assert refused.status_code == 401
        allowed = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert allowed.status_code == 200 and len(allowed.json()["nodes"]) >= 3
    finally:
        server.terminate()
        server.wait(10)


def test_malformed_parameters_get_422_naming_the_field(client, web_project):
    project = web_project["project"]
    runs_before = len(project.runs())
    good_input = {"tilt_series": web_project["imported"].name}
    cases = [
        ({"binning": "two"}, good_input, "params.binning"),
        ({"binning": 100}, good_input, "params.binning"),
        ({"binnning": 2}, good_input, "params.binnning"),
        ({"binning": 2}, {}, "inputs.tilt_series"),
        ({"binning": 2}, {"tilt_series": web_project["tomograms"].name}, "inputs.tilt_series"),
        ({"binning": 2}, {"tilt_series": "no-such-run"}, "inputs.tilt_series"),
    ]
    for params, inputs, field in cases:
        response = client.post("/api/runs", json={"protocol": "tiltseries.bin", "inputs": inputs,
                                                  "params": params, "launch": False})
        assert response.status_code == 422, (params, inputs, response.text)
        detail = response.json()["detail"]
        assert detail["errors"][0]["field"] == field, (params, inputs, detail)
        assert field.split(".")[1] in detail["message"]
    response = client.post("/api/runs", json={"protocol": "tiltseries.bin", "name": "../evil",
                                              "inputs": good_input, "launch": False})
    assert response.status_code == 422 and response.json()["detail"]["errors"][0]["field"] == "name"
    assert len(project.runs()) == runs_before  # nothing recorded


def _png(client: TestClient, **params) -> np.ndarray:
    """The slice as served, rows turned back into array order (PNGs are drawn y up)."""
    response = client.get("/api/volume/slice", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))[::-1]


def test_slices_show_the_volume_where_it_is(client, web_project):
    tomogram = web_project["project"].items(web_project["tomograms"])[0]
    nx, ny, nz = TOMOGRAM_SIZE_XYZ
    bx, by, bz = BLOBS_XYZ[0]
    xy = _png(client, path=tomogram.path, axis="z", index=bz, binning=1)
    xz = _png(client, path=tomogram.path, axis="y", index=by, binning=1)
    yz = _png(client, path=tomogram.path, axis="x", index=bx, binning=1)
    assert xy.shape == (ny, nx) and xz.shape == (nz, nx) and yz.shape == (nz, ny)
    assert xy[by, bx] == 255 and xz[bz, bx] == 255 and yz[bz, by] == 255
    assert np.median(xy) < 160  # background stays grey: contrast is ±3σ of the whole volume
    binned = _png(client, path=tomogram.path, axis="z", index=bz, binning=2)
    assert binned.shape == (ny // 2, nx // 2) and binned[by // 2, bx // 2] > 200
    info = client.get("/api/volume/info", params={"path": tomogram.path}).json()
    assert info["size_xyz"] == list(TOMOGRAM_SIZE_XYZ) and info["pixel_size_a"] == PIXEL_SIZE_A


def test_picks_are_saved_through_a_pick_manual_run(client, web_project):
    project = web_project["project"]
    reference = f"{web_project['tomograms'].name}.tomograms"
    first = client.post("/api/picks", json={"tomograms": reference, "tomogram": "TS_01",
                                            "picks_a": [[0.0, 10.0, -20.0]]})
    assert first.status_code == 200, first.text
    name = first.json()["name"]
    assert first.json()["state"] == "finished"
    again = client.post("/api/picks", json={"tomograms": reference, "tomogram": "TS_01",
                                            "picks_a": [[0.0, 10.0, -20.0], [50.0, 60.0, 70.0]],
                                            "run": name})
    assert again.status_code == 200 and again.json()["name"] == name
    shown = show(project, name)
    particles = shown["outputs"]["particles"]["items"]
    assert [p["position_a"] for p in particles] == [[0.0, 10.0, -20.0], [50.0, 60.0, 70.0]]
    assert shown["run"]["params"]["picks"]["TS_01"][1] == [50.0, 60.0, 70.0]
    listed = client.get("/api/particles", params={
        "tomogram": "TS_01", "source_run": web_project["tomograms"].id,
        "source_output": "tomograms"}).json()
    by_run = {s["run"]: s for s in listed}
    assert by_run[name]["editable"] and len(by_run[name]["particles"]) == 2
    assert len(by_run[web_project["picks"].name]["particles"]) == len(PICKS_A)
    typo = client.post("/api/picks", json={"tomograms": reference, "tomogram": "TS_1",
                                           "picks_a": [[0, 0, 0]]})
    assert typo.status_code == 422 and "TS_1" in typo.json()["detail"]["message"]
    bad = client.post("/api/picks", json={"tomograms": reference, "tomogram": "TS_01",
                                          "picks_a": [[0, 0, 0]], "run": web_project["imported"].name})
    assert bad.status_code == 422


def test_graph_has_runs_and_edges(client, web_project):
    graph = client.get("/api/graph").json()
    names = {n["name"]: n for n in graph["nodes"]}
    ids = {key: web_project[key].id for key in ("imported", "tomograms", "picks")}
    assert all(names[web_project[key].name]["state"] == "finished" for key in ids)
    edges = {(e["source"], e["target"], e["type"]) for e in graph["edges"]}
    assert (ids["imported"], ids["tomograms"], "TiltSeries") in edges
    assert (ids["tomograms"], ids["picks"], "Tomogram") in edges
    options = client.get("/api/outputs", params={"type": "Tomogram"}).json()
    assert {o["type"] for o in options} == {"Tomogram"} and options[0]["count"] == 1
    form = client.get("/api/protocols/pick.manual").json()
    assert form["inputs"]["tomograms"]["type"] == "Tomogram"
    assert form["params"]["properties"]["picks"]["unit"] == "Å"
    assert os.path.basename(client.get("/api/project").json()["root"]) == "proj"


def test_png_encoding_round_trips_small_and_big_planes():
    from tomoweave.web.imaging import encode_grey_png

    rng = np.random.default_rng(3)
    for shape in ((5, 7), (600, 1000)):  # deflated, and stored (above 256×256 px)
        grey = rng.integers(0, 256, shape).astype(np.uint8)
        decoded = np.asarray(Image.open(io.BytesIO(encode_grey_png(grey))))
        assert decoded.shape == shape and np.array_equal(decoded, grey)


def _wait_for_state(client: TestClient, run_id: int, wanted: str, seconds: float = 40) -> dict:
    deadline = time.time() + seconds
    while True:
        details = client.get(f"/api/runs/{run_id}").json()
        if details["state"] == wanted:
            return details
        assert time.time() < deadline, f"run {run_id} stayed {details['state']}, not {wanted}"
        time.sleep(0.2)


def test_launch_stop_and_resume_a_run(client, web_project, tmp_path):
    # a watching import runs until stopped: a run that is reliably still running
    watched = tmp_path / "microscope"
    watched.mkdir()
    launched = client.post("/api/runs", json={
        "protocol": "import.mdoc", "executor": "inline", "name": "watching",
        "params": {"files": [str(watched / "*.mdoc")], "watch": True, "settle_s": 0,
                   "stop_after_idle_s": 600}})
    assert launched.status_code == 200, launched.text
    run_id = launched.json()["id"]
    running = _wait_for_state(client, run_id, "running")
    pid = running["pid"]
    assert pid and pid != os.getpid()
    stopped = client.post(f"/api/runs/{run_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "interrupted"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "stopped" in client.get(f"/api/runs/{run_id}").json()["error"]
    assert client.post(f"/api/runs/{run_id}/stop").status_code == 409  # not running any more

    resumed = client.post(f"/api/runs/{run_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] in ("queued", "running")
    again = _wait_for_state(client, run_id, "running")
    assert again["pid"] != pid
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 409  # already running
    assert client.post(f"/api/runs/{run_id}/stop").json()["state"] == "interrupted"
    log = client.get(f"/api/runs/{run_id}/log").json()
    assert log["text"].count("started; parameters") == 2


def test_rerun_with_changed_parameters_updates_the_named_run(client, web_project):
    project = web_project["project"]
    body = {"protocol": "tiltseries.bin", "inputs": {"tilt_series": web_project["imported"].name},
            "params": {"binning": 2}, "name": "binned-for-rerun", "launch": False}
    first = client.post("/api/runs", json=body)
    assert first.status_code == 200
    project.execute(project.get_run("binned-for-rerun"), "inline")
    assert project.items("binned-for-rerun")[0].pixel_size_a == 2 * PIXEL_SIZE_A
    again = client.post("/api/runs", json={**body, "params": {"binning": 4}})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["state"] == "queued"
    project.execute(project.get_run("binned-for-rerun"), "inline")
    assert project.items("binned-for-rerun")[0].pixel_size_a == 4 * PIXEL_SIZE_A
    details = client.get(f"/api/runs/{first.json()['id']}").json()
    assert details["params"] == {"binning": 4.0} and details["journal"][0]["attempts"] == 2
    other = client.post("/api/runs", json={**body, "protocol": "pick.manual", "inputs": {
        "tomograms": web_project["tomograms"].name}, "params": {}})
    assert other.status_code == 422 and other.json()["detail"]["errors"][0]["field"] == "name"
