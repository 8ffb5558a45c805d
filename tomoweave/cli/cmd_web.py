"""`tomoweave serve`: the web GUI of a project."""

from __future__ import annotations

from pathlib import Path

import typer

from tomoweave.cli.common import ProjectOption, handle_errors
from tomoweave.engine.errors import TomoweaveError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@handle_errors
def serve(
    project_dir: Path = ProjectOption,
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but "
                             "loopback requires a token"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    token: str = typer.Option(None, "--token", help="access token (generated when binding a "
                              "non-loopback address without one)"),
    allow_dir: list[Path] = typer.Option(None, "--allow-dir", help="a folder outside the "
                                         "project whose files may be viewed and browsed (where "
                                         "imports link to); repeatable"),
    allow_host: list[str] = typer.Option(None, "--allow-host", help="another host name the "
                                         "browser may use for this server (a proxy's); "
                                         "repeatable"),
) -> None:
    """Serve the project's web GUI: graph, forms, run pages and viewers."""
    import uvicorn

    from tomoweave.web import create_app
    from tomoweave.web.security import is_loopback, link_targets_outside, new_token

    if token is None and not is_loopback(host):
        token = new_token()
    for folder in allow_dir or []:
        if not folder.is_dir():
            raise TomoweaveError(f"--allow-dir {folder}: no such folder")
    app = create_app(project_dir, token=token, host=host, allowed_hosts=allow_host or [],
                     allowed_dirs=allow_dir or [])
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    address = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    typer.echo(f"tomoweave GUI for {Path(project_dir).resolve()}: {address}", err=True)
    outside = link_targets_outside(Path(project_dir), allow_dir or [])
    if outside:
        shown = " ".join(f"--allow-dir {folder}" for folder in outside[:3])
        typer.echo(f"note: files of this project link to {len(outside)} folder(s) outside it, "
                   f"which are not served; to view them add {shown}"
                   + (" ..." if len(outside) > 3 else ""), err=True)
    if not is_loopback(host):
        typer.echo("remote users need the token above; over SSH prefer a tunnel: "
                   f"ssh -L {port}:127.0.0.1:{port} HOST", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
