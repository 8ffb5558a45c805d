"""Who may talk to the server and which files it may read.

- Loopback binds need no token (only this machine's users reach them). Any other bind needs one:
  ``Authorization: Bearer T``, a ``?token=T`` query parameter (which also sets a cookie, so the
  browser's later requests carry it), or that cookie.
- Files are served only from inside the project folder. A requested path is normalised lexically
  (``..`` and absolute paths elsewhere are refused) and then resolved; the resolved target must be
  inside the project too, unless the path is a symbolic link the project itself holds (imports
  link to the microscope's files instead of copying them).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, RedirectResponse

COOKIE_NAME = "tomoweave_token"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


class TokenMiddleware(BaseHTTPMiddleware):
    """401 for every request that does not carry the token (when a token is set)."""

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next):
        if self.token is None:
            return await call_next(request)
        query_token = request.query_params.get("token")
        if query_token is not None and self._matches(query_token):
            # a bookmarked ?token= link: remember it in a cookie, then drop it from the URL
            clean = request.url.remove_query_params("token")
            if request.method == "GET" and not request.url.path.startswith("/api/"):
                response = RedirectResponse(str(clean), status_code=303)
            else:
                response = await call_next(request)
            response.set_cookie(COOKIE_NAME, self.token, httponly=True, samesite="strict")
            return response
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        given = given or request.cookies.get(COOKIE_NAME)
        if given is None or not self._matches(given):
            return JSONResponse({"detail": "missing or wrong token: open the address that "
                                 "`tomoweave serve` printed (it ends with ?token=...)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    def _matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())


def confined_path(root: Path, requested: str) -> Path:
    """The absolute path of ``requested`` (project-relative, or absolute inside the project);
    403 when it points outside the project, 404 when it does not exist."""
    root = root.resolve()
    if not requested or "\x00" in requested:
        raise HTTPException(404, "no path given")
    pure = PurePosixPath(requested.replace("\\", "/"))
    if ".." in pure.parts:
        raise HTTPException(403, f"{requested}: '..' is not allowed in paths")
    lexical = Path(os.path.normpath(pure if pure.is_absolute() else root / pure))
    if not lexical.is_relative_to(root):
        raise HTTPException(403, f"{requested}: outside the project folder")
    resolved = lexical.resolve()
    if not resolved.is_relative_to(root) and not _is_project_link(root, lexical):
        raise HTTPException(403, f"{requested}: outside the project folder")
    if not resolved.is_file():
        raise HTTPException(404, f"{requested}: no such file in the project")
    return resolved


def _is_project_link(root: Path, lexical: Path) -> bool:
    """True when some component of ``lexical`` inside the project is a symbolic link (an import
    link); its target is data the project refers to on purpose."""
    current = root
    for part in lexical.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return True
    return False
