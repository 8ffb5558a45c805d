"""The FastAPI application: JSON API over the project, image endpoints and the static front end.

``create_app(project_dir, token, host=...)`` builds it; ``tomoweave serve`` runs it with
uvicorn. Each server thread opens its own catalog connection (SQLite connections are per
thread). Access rules (Host, token, cross-site requests, folders served): ``web.security``.
"""

from __future__ import annotations

import html
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tomoweave.api import Project
from tomoweave.engine.registry import protocols
from tomoweave.web.security import AccessMiddleware, AccessPolicy, allowed_hosts_for

STATIC_DIR = Path(__file__).parent / "static"


class ProjectAccess:
    """One ``Project`` per server thread, and the scheduler processes this server started."""

    def __init__(self, root: Path, allowed_dirs: Iterable[Path] = ()):
        self.root = Path(root).resolve()
        self.allowed_dirs = tuple(Path(d).resolve() for d in allowed_dirs)
        Project.open(self.root).catalog.close()  # fail early on a folder that is no project
        self._local = threading.local()
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._registry_lock = threading.Lock()

    def project(self) -> Project:
        project = getattr(self._local, "project", None)
        if project is None:
            project = Project.open(self.root)
            self._local.project = project
        return project

    def protocols(self) -> dict:
        """The protocol registry; the first call imports every protocol module (once)."""
        with self._registry_lock:
            return protocols()

    def project_events_after(self, event_id: int) -> list[dict]:
        return self.project().catalog.events_after(event_id)

    def adopt(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._children.append(process)

    def reap(self) -> None:
        """Collect ended scheduler processes so their pids stop looking alive (zombies)."""
        with self._lock:
            self._children = [p for p in self._children if p.poll() is None]


def create_app(project_dir: str | Path, token: str | None = None, *, host: str = "127.0.0.1",
               allowed_hosts: Iterable[str] = (), allowed_dirs: Iterable[str | Path] = ()
               ) -> FastAPI:
    """The web application for one project.

    Parameters
    ----------
    project_dir : path
        The project folder.
    token : str, optional
        Access token every request must carry (needed for non-loopback binds).
    host : str
        The address the server is bound to: requests naming another host are refused.
    allowed_hosts : names
        Further host names requests may use (a reverse proxy's, an SSH alias).
    allowed_dirs : folders
        Folders outside the project whose files may be served and browsed (where imports link).
    """
    from tomoweave.web import routes_files, routes_project, routes_runs, routes_viewers

    access = ProjectAccess(Path(project_dir), allowed_dirs)
    # importing every protocol module takes seconds: start it now, not on the first page
    threading.Thread(target=access.protocols, name="protocol-registry", daemon=True).start()
    app = FastAPI(title="tomoweave", docs_url="/api/docs", redoc_url=None)
    policy = AccessPolicy(allowed_hosts=allowed_hosts_for(host, allowed_hosts), token=token,
                          allowed_dirs=access.allowed_dirs)
    app.state.access = access
    app.state.policy = policy
    app.add_middleware(AccessMiddleware, policy=policy)
    app.include_router(routes_project.router)
    app.include_router(routes_runs.router)
    app.include_router(routes_viewers.router)
    app.include_router(routes_files.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    page = (STATIC_DIR / "index.html").read_text()

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        # the page carries the cross-site token: only a page of this origin can read it
        body = page.replace("{{csrf_token}}", html.escape(policy.csrf_token))
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    return app
