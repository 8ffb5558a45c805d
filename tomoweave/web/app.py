"""The FastAPI application: JSON API over the project, image endpoints and the static front end.

``create_app(project_dir, token)`` builds it; ``tomoweave serve`` runs it with uvicorn.
Each server thread opens its own catalog connection (SQLite connections are per thread).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from tomoweave.api import Project
from tomoweave.engine.registry import protocols
from tomoweave.web.security import TokenMiddleware

STATIC_DIR = Path(__file__).parent / "static"


class ProjectAccess:
    """One ``Project`` per server thread, and the scheduler processes this server started."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
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


def create_app(project_dir: str | Path, token: str | None = None) -> FastAPI:
    """The web application for one project; every request needs ``token`` when it is set."""
    from tomoweave.web import routes_project, routes_runs, routes_viewers

    access = ProjectAccess(Path(project_dir))
    # importing every protocol module takes seconds: start it now, not on the first page
    threading.Thread(target=access.protocols, name="protocol-registry", daemon=True).start()
    app = FastAPI(title="tomoweave", docs_url="/api/docs", redoc_url=None)
    app.state.access = access
    app.add_middleware(TokenMiddleware, token=token)
    app.include_router(routes_project.router)
    app.include_router(routes_runs.router)
    app.include_router(routes_viewers.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return app
