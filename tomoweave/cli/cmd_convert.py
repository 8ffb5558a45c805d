"""`tomoweave convert INPUT --to FORMAT --out DIR`: convert between formats without a project."""

from __future__ import annotations

from pathlib import Path

import typer

from tomoweave.cli.common import handle_errors
from tomoweave.formats import CONVERSION_TARGETS


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)


@handle_errors
def convert_command(
    source: Path = typer.Argument(..., help="file to convert (.aln .xf .tlt .star .xml "
                                            ".tomostar .tbl .mdoc .json .defocus .txt)"),
    to: str = typer.Option(..., "--to", help=f"target format: {', '.join(CONVERSION_TARGETS)}"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to write into"),
    pixel_size: float | None = typer.Option(None, "--pixel-size",
                                            help="pixel size in Å of the source's pixels"),
    tomo_size: tuple[int, int, int] | None = typer.Option(
        None, "--tomo-size", help="tomogram size X Y Z in pixels (for corner-based coordinates)"),
    image_size: tuple[int, int] | None = typer.Option(
        None, "--image-size", help="tilt-image size X Y in pixels"),
    tilts: Path | None = typer.Option(None, "--tilts", help="tilt angles file (.tlt/.rawtlt)"),
    name: str | None = typer.Option(None, "--name", help="name of the tilt series/tomogram"),
    defocus: float | None = typer.Option(
        None, "--defocus", help="nominal defocus in Å (underfocus) for tilts without a CTF "
                                "estimate or nominal defocus (RELION 5 needs one per tilt)"),
) -> None:
    """Convert alignments, CTFs and particles between RELION, IMOD, AreTomo, Warp, Dynamo, EMAN2,
    copick and CTFFIND files, through tomoweave's geometry (no project needed)."""
    from tomoweave.convert import ConvertOptions, convert  # pandas-heavy: only when converting

    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    options = ConvertOptions(pixel_size_a=pixel_size, tomo_size_xyz=tomo_size,
                             image_size_xy=image_size, tilts_file=str(tilts) if tilts else None,
                             name=name, defocus_a=defocus)
    for path in convert(source, to, out, options):
        typer.echo(str(path))
