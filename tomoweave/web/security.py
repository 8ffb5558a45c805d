"""Who may talk to the server and which files it may read.

Every request passes three checks (``AccessMiddleware``), in this order:

- **Host.** The ``Host`` header must name the address the server is bound to (for a loopback
  bind: ``localhost``, ``127.0.0.1`` or ``[::1]``; for a wildcard bind: this machine's names and
  addresses), or a name given with ``serve --allow-host``. A web page that re-binds its own DNS
  name to 127.0.0.1 (DNS rebinding) sends its own name and is refused.
- **Token.** Loopback binds need no token (only this machine's users reach them). Any other bind
  needs one: ``Authorization: Bearer T``, a ``?token=T`` query parameter (which also sets a
  cookie, so the browser's later requests carry it), or that cookie (``SameSite=Strict``).
- **Cross-site requests.** A state-changing request (anything but GET, HEAD, OPTIONS) must come
  from the GUI's own origin: an ``Origin`` (or, without one, a ``Referer``) naming this server,
  or the per-server ``X-Tomoweave-Csrf`` token, which the GUI's page carries and no other site
  can read, or the access token as a bearer header (scripts). A cross-origin ``Origin`` is
  refused whatever else the request carries.

Files are served only from inside the project folder and the folders the user allowed
(``serve --allow-dir``). A requested path is normalised lexically (``..`` is refused) and then
resolved; the resolved target must be inside the project or an allowed folder too, so a
symbolic link that leads out of them (an import's link to the microscope's files, or a link
somebody planted) is refused, with the option that allows it named in the error.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, RedirectResponse

COOKIE_NAME = "tomoweave_token"
CSRF_HEADER = "x-tomoweave-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name_of(netloc: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, lower case, without brackets."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    if netloc.count(":") == 1:
        return netloc.split(":", 1)[0]
    return netloc  # a bare IPv6 address (no port) or a plain name


def allowed_hosts_for(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a request may name for a server bound to ``bind_host``."""
    names = {host_name_of(h) for h in extra if h}
    bind = host_name_of(bind_host) if bind_host not in WILDCARD_BINDS else bind_host
    if is_loopback(bind):
        names |= LOOPBACK_NAMES | {bind}
    elif bind in WILDCARD_BINDS:
        names |= LOOPBACK_NAMES | _machine_names()
    else:
        names.add(bind)
    return frozenset(n.lower() for n in names)


def _machine_names() -> set[str]:
    """This machine's host name, full name and addresses (what a wildcard bind answers to)."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:  # the address of the default route (a UDP connect sends no packet)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            names.add(probe.getsockname()[0])
    except OSError:
        pass
    for name in list(names):
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            continue
    return {n.lower() for n in names if n}


@dataclass
class AccessPolicy:
    """What ``AccessMiddleware`` enforces; ``csrf_token`` goes into the GUI's page."""

    allowed_hosts: frozenset[str]
    token: str | None = None
    csrf_token: str = field(default_factory=new_token)
    allowed_dirs: tuple[Path, ...] = ()


class AccessMiddleware(BaseHTTPMiddleware):
    """400 for a foreign Host, 401 without the token (when one is set), 403 for a cross-site
    state-changing request."""

    def __init__(self, app, policy: AccessPolicy):
        super().__init__(app)
        self.policy = policy

    async def dispatch(self, request: Request, call_next):
        host = request.headers.get("host", "")
        if host_name_of(host) not in self.policy.allowed_hosts:
            return JSONResponse({"detail": f"host '{host}' is not this server's address; "
                                 "open the address `tomoweave serve` printed (or add the name "
                                 "with --allow-host)"}, status_code=400)
        if self.policy.token is not None:
            refused, remember = self._check_token(request)
            if refused is not None:
                return refused
        else:
            remember = False
        if request.method not in SAFE_METHODS and not self._same_site(request, host):
            return JSONResponse({"detail": "cross-site request refused: state-changing requests "
                                 "must come from the tomoweave page itself (Origin/Referer of "
                                 "this server, or the X-Tomoweave-Csrf header)"}, status_code=403)
        if remember and request.method == "GET" and not request.url.path.startswith("/api/"):
            # a bookmarked ?token= link: remember it in a cookie, then drop it from the URL
            response = RedirectResponse(str(request.url.remove_query_params("token")), 303)
        else:
            response = await call_next(request)
        if remember:
            response.set_cookie(COOKIE_NAME, self.policy.token, httponly=True, samesite="strict")
        return response

    def _check_token(self, request: Request) -> tuple[JSONResponse | None, bool]:
        """(a 401 response or None, whether the token came in the query and goes to a cookie)."""
        query_token = request.query_params.get("token")
        if query_token is not None and _matches(query_token, self.policy.token):
            return None, True
        given = _bearer(request) or request.cookies.get(COOKIE_NAME)
        if given is None or not _matches(given, self.policy.token):
            return JSONResponse({"detail": "missing or wrong token: open the address that "
                                 "`tomoweave serve` printed (it ends with ?token=...)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"}), False
        return None, False

    def _same_site(self, request: Request, host: str) -> bool:
        origin = request.headers.get("origin")
        if origin is not None:  # browsers send it on every cross-origin POST: decisive
            return _netloc(origin) == host.strip().lower()
        referer = request.headers.get("referer")
        if referer is not None and _netloc(referer) == host.strip().lower():
            return True
        csrf = request.headers.get(CSRF_HEADER)
        if csrf is not None and _matches(csrf, self.policy.csrf_token):
            return True
        bearer = _bearer(request)
        return bool(self.policy.token and bearer and _matches(bearer, self.policy.token))


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


def _netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def confined_path(root: Path, requested: str, allowed_dirs: Iterable[Path] = (), *,
                  kind: str = "file") -> Path:
    """The absolute path of ``requested`` (project-relative, or absolute inside the project or
    an allowed folder); 403 when it, or the target of a link on the way, is outside them, 404
    when it does not exist (as a file, or as a folder with ``kind="dir"``)."""
    root = root.resolve()
    folders = [root, *(Path(d).resolve() for d in allowed_dirs)]
    if not requested or "\x00" in requested:
        raise HTTPException(404, "no path given")
    pure = PurePosixPath(requested.replace("\\", "/"))
    if ".." in pure.parts:
        raise HTTPException(403, f"{requested}: '..' is not allowed in paths")
    lexical = Path(os.path.normpath(pure if pure.is_absolute() else root / pure))
    if not any(lexical.is_relative_to(folder) for folder in folders):
        raise HTTPException(403, f"{requested}: outside the project folder")
    resolved = lexical.resolve()
    if not any(resolved.is_relative_to(folder) for folder in folders):
        raise HTTPException(403, f"{requested}: a symbolic link leads out of the project (to "
                            f"{resolved.parent}); start `tomoweave serve --allow-dir "
                            f"{resolved.parent}` to view it")
    exists = resolved.is_dir() if kind == "dir" else resolved.is_file()
    if not exists:
        raise HTTPException(404, f"{requested}: no such {kind} in the project")
    return resolved


def link_targets_outside(root: Path, allowed_dirs: Iterable[Path] = (), limit: int = 20
                         ) -> list[Path]:
    """Folders that symbolic links in the project's run folders lead to, outside the project
    and the allowed folders (at most ``limit``): what ``serve`` tells the user to allow."""
    root = Path(root).resolve()
    folders = [root, *(Path(d).resolve() for d in allowed_dirs)]
    found: list[Path] = []
    for current, directories, files in os.walk(root / "runs"):
        for name in (*directories, *files):
            path = Path(current) / name
            if not path.is_symlink():
                continue
            target = path.resolve().parent
            if not any(target.is_relative_to(f) for f in folders) and target not in found:
                found.append(target)
                if len(found) >= limit:
                    return found
    return found
