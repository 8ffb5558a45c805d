"""Web security over real HTTP (uvicorn on a loopback port, httpx as the attacker's browser):
DNS rebinding (a foreign Host), cross-site state-changing requests (a form POST from another
origin must not relaunch a run), symbolic links out of the project, and the folder browser."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from tests.conftest import write_stack
from tomoweave.api import Project
from tomoweave.web import create_app
from tomoweave.web.security import allowed_hosts_for, host_name_of


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("security")
    stack = write_stack(base / "microscope" / "TS_01.mrc", 5, (32, 32))
    project = Project.init(base / "proj")
    imported = project.run("import.tiltseries", params={"files": [str(stack)]},
                           executor="inline")
    assert imported.state == "finished"
    secret = base / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for you")
    return {"project": project, "imported": imported, "stack": stack, "secret": secret,
            "base": base}


def _serve(app):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            httpx.get(url + "/api/project", timeout=1).raise_for_status()
            return server, thread, url, port
        except httpx.TransportError:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def served(project):
    server, thread, url, port = _serve(create_app(project["project"].root))
    yield {"url": url, "port": port, **project}
    server.should_exit = True
    thread.join(10)


def test_a_foreign_host_is_refused(served):
    """DNS rebinding: the attacker's name resolves to 127.0.0.1; the browser sends its Host."""
    for path in ("/", "/api/graph", "/static/app.js", f"/api/runs/{served['imported'].id}"):
        response = httpx.get(served["url"] + path, headers={"Host": "attacker.example"})
        assert response.status_code == 400, (path, response.status_code)
        assert "attacker.example" in response.json()["detail"]
        port_host = {"Host": f"attacker.example:{served['port']}"}
        assert httpx.get(served["url"] + path, headers=port_host).status_code == 400
    for host in (f"127.0.0.1:{served['port']}", f"localhost:{served['port']}", "localhost"):
        assert httpx.get(served["url"] + "/api/graph", headers={"Host": host}).status_code == 200


def test_cross_site_posts_do_not_relaunch_a_run(served):
    project, run = served["project"], served["imported"]
    before = run.record
    scheduler_out = project.root / run.folder / "logs" / "scheduler.out"
    assert not scheduler_out.exists()
    resume = f"{served['url']}/api/runs/{run.id}/resume"
    attacks = [
        # an HTML form on another site, posted by the victim's browser
        {"Origin": "http://attacker.example", "Content-Type": "application/x-www-form-urlencoded"},
        {"Origin": "null", "Content-Type": "text/plain"},  # a sandboxed frame
        {"Referer": "http://attacker.example/page.html"},  # an old browser: no Origin
        {},  # no Origin, no Referer, no token: not from the GUI
        {"Origin": "http://attacker.example", "X-Tomoweave-Csrf": "guessed"},
    ]
    for headers in attacks:
        response = httpx.post(resume, headers=headers, content=b"executor=inline")
        assert response.status_code == 403, (headers, response.status_code, response.text)
        assert "cross-site" in response.json()["detail"]
    after = run.record
    assert (after.state, after.pid, after.started) == (before.state, before.pid, before.started)
    assert not scheduler_out.exists()  # no scheduler was started
    # the GUI's own requests pass the check (422: the body is then validated as usual)
    origin = {"Origin": served["url"]}
    assert httpx.post(served["url"] + "/api/runs", json={}, headers=origin).status_code == 422
    page = httpx.get(served["url"] + "/").text
    token = page.split('name="tomoweave-csrf" content="', 1)[1].split('"', 1)[0]
    assert len(token) >= 20
    with_token = {"X-Tomoweave-Csrf": token}
    assert httpx.post(served["url"] + "/api/runs", json={}, headers=with_token).status_code == 422
    referer = {"Referer": served["url"] + "/#/run/1"}
    assert httpx.post(served["url"] + "/api/runs", json={}, headers=referer).status_code == 422


def test_links_out_of_the_project_are_refused_unless_allowed(served, project):
    root = project["project"].root
    series = project["project"].items(project["imported"])[0]
    tilt_path = series.tilts[0].image_path
    assert (root / tilt_path).is_symlink()  # the import links to the microscope's stack
    planted = root / "runs" / "innocent.png"
    planted.symlink_to(project["secret"])
    folder_link = root / "runs" / "elsewhere"
    folder_link.symlink_to(project["secret"].parent, target_is_directory=True)
    (root / "runs" / "real.png").write_bytes(b"inside")
    (root / "runs" / "alias.png").symlink_to(root / "runs" / "real.png")
    try:
        for path in ("runs/innocent.png", "runs/elsewhere/secret.png"):
            response = httpx.get(served["url"] + "/api/file", params={"path": path})
            assert response.status_code == 403 and b"not for you" not in response.content
            assert "--allow-dir" in response.json()["detail"]
        image = httpx.get(served["url"] + "/api/image", params={"path": tilt_path, "index": 0})
        assert image.status_code == 403 and "--allow-dir" in image.json()["detail"]
        inside = httpx.get(served["url"] + "/api/file", params={"path": "runs/alias.png"})
        assert inside.status_code == 200 and inside.content == b"inside"  # a link inside: fine

        app = create_app(root, allowed_dirs=[project["stack"].parent])
        server, thread, url, _ = _serve(app)
        try:
            image = httpx.get(url + "/api/image", params={"path": tilt_path, "index": 0})
            assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
            refused = httpx.get(url + "/api/file", params={"path": "runs/innocent.png"})
            assert refused.status_code == 403  # only the folder that was allowed
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        for link in (planted, folder_link, root / "runs" / "alias.png"):
            link.unlink()


def test_the_folder_browser_stays_in_allowed_folders(project):
    root = project["project"].root
    from fastapi.testclient import TestClient

    allowed = project["stack"].parent
    client = TestClient(create_app(root, allowed_dirs=[allowed]), base_url="http://127.0.0.1")
    listing = client.get("/api/browse").json()
    assert listing["path"] == str(root) and listing["parent"] is None
    assert {"runs", "project.sqlite"} <= {e["name"] for e in listing["entries"]}
    microscope = client.get("/api/browse", params={"path": str(allowed), "pattern": "*.mrc"})
    assert microscope.status_code == 200
    assert [e["name"] for e in microscope.json()["entries"]] == ["TS_01.mrc"]
    for path in ("/etc", str(project["secret"].parent), str(root.parent)):
        assert client.get("/api/browse", params={"path": path}).status_code == 403, path
    assert client.get("/api/browse", params={"path": "runs/../.."}).status_code == 403


def test_allowed_hosts_follow_the_bind_address():
    assert host_name_of("[::1]:8000") == "::1" and host_name_of("Example.org:80") == "example.org"
    loopback = allowed_hosts_for("127.0.0.1")
    assert {"localhost", "127.0.0.1", "::1"} <= loopback and "attacker.example" not in loopback
    assert allowed_hosts_for("10.1.2.3") == {"10.1.2.3"}
    assert "gpu-box.lab" in allowed_hosts_for("10.1.2.3", ["gpu-box.lab:8000"])
    wildcard = allowed_hosts_for("0.0.0.0")
    assert socket.gethostname().lower() in wildcard and "attacker.example" not in wildcard
