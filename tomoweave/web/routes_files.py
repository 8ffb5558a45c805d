"""Files: project files served by type (pictures, logs, tables), and a folder browser for the
import forms, both confined to the project and the folders the user allowed."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from tomoweave.web.routes_project import access_of
from tomoweave.web.security import confined_path

router = APIRouter(prefix="/api")
SERVED_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                   ".svg": "image/svg+xml", ".txt": "text/plain", ".log": "text/plain",
                   ".out": "text/plain", ".json": "application/json", ".star": "text/plain",
                   ".csv": "text/plain", ".tlt": "text/plain", ".xf": "text/plain",
                   ".html": "text/html", ".cxc": "text/plain"}
MAX_LISTED_ENTRIES = 2000


def project_path(request: Request, path: str, kind: str = "file") -> Path:
    """``path`` resolved inside the project or an allowed folder (403/404 otherwise)."""
    access = access_of(request)
    return confined_path(access.root, path, access.allowed_dirs, kind=kind)


@router.get("/file")
def project_file(request: Request, path: str) -> FileResponse:
    """A picture, log or table inside the project (diagnostic PNGs, FSC plots, ...)."""
    resolved = project_path(request, path)
    media_type = SERVED_SUFFIXES.get(resolved.suffix.lower())
    if media_type is None:
        raise HTTPException(415, f"{path}: files of type '{resolved.suffix}' are not served")
    return FileResponse(resolved, media_type=media_type)


@router.get("/browse")
def browse(request: Request, path: str | None = None, pattern: str | None = None
           ) -> dict[str, Any]:
    """The folders and files of one folder (the project when ``path`` is empty), for picking
    import paths; ``pattern`` (e.g. ``*.mdoc``) filters the files. Only the project and the
    folders given with ``serve --allow-dir`` can be listed."""
    access = access_of(request)
    roots = [access.root, *access.allowed_dirs]
    folder = project_path(request, path, kind="dir") if path else access.root
    entries = []
    try:
        children = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower()))
    except PermissionError:
        raise HTTPException(403, f"{folder}: not readable") from None
    for child in children:
        if child.name.startswith("."):
            continue
        is_dir = child.is_dir()
        if not is_dir and pattern and not fnmatch.fnmatch(child.name, pattern):
            continue
        try:
            confined_path(access.root, str(child), access.allowed_dirs,
                          kind="dir" if is_dir else "file")
        except HTTPException:
            continue  # a link out of the allowed folders: not offered
        entries.append({"name": child.name, "path": str(child), "type": "dir" if is_dir else "file",
                        "size": None if is_dir else child.stat().st_size})
        if len(entries) >= MAX_LISTED_ENTRIES:
            break
    root = next((r for r in roots if folder.is_relative_to(r)), access.root)
    parent = str(folder.parent) if folder != root else None
    return {"path": str(folder), "parent": parent, "roots": [str(r) for r in roots],
            "entries": entries, "truncated": len(entries) >= MAX_LISTED_ENTRIES}
