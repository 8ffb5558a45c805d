"""Viewer endpoints: slices of volumes and tilt images as PNG, project files, particles of a
tomogram. Every path parameter is confined to the project folder (see security.confined_path)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from tomoweave.store.particle_tables import tomogram_particles
from tomoweave.web import imaging
from tomoweave.web.routes_files import project_path
from tomoweave.web.routes_project import access_of

router = APIRouter(prefix="/api")
MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".rec", ".map")
PNG_HEADERS = {"Cache-Control": "no-store"}
INLINE_PARTICLES = 5000  # larger sets: binary columns
PARTICLE_COLUMNS = 7


def _mrc_path(request: Request, path: str):
    resolved = project_path(request, path)
    if not resolved.name.lower().endswith(MRC_SUFFIXES):
        raise HTTPException(415, f"{path}: not an MRC file")
    return resolved


@router.get("/volume/info")
def volume_info(request: Request, path: str) -> dict[str, Any]:
    info = imaging.volume_info(_mrc_path(request, path))
    shape = info.shape_zyx if len(info.shape_zyx) == 3 else (1, *info.shape_zyx)
    return {"size_xyz": [shape[2], shape[1], shape[0]], "pixel_size_a": info.pixel_size_a,
            "mean": info.mean, "std": info.std}


@router.get("/volume/slice")
async def volume_slice(request: Request, path: str, axis: str = "z", index: int = -1,
                       binning: int = 0, low_sigma: float = -3.0, high_sigma: float = 3.0,
                       per_slice: bool = False) -> Response:
    """PNG of the plane normal to ``axis`` at voxel ``index`` (centre when negative); binning 0
    picks the smallest power of two that keeps the plane within 1024 px."""
    resolved = _mrc_path(request, path)
    if axis not in imaging.AXES:
        raise HTTPException(422, {"message": "axis must be z, y or x",
                                  "errors": [{"field": "axis", "message": "z, y or x"}]})
    if not 0 <= binning <= 64:
        raise HTTPException(422, {"message": "binning must be 0 (auto) to 64",
                                  "errors": [{"field": "binning", "message": "0 to 64"}]})

    def render() -> tuple[bytes, int, int]:
        info = imaging.volume_info(resolved)
        shape = info.shape_zyx if len(info.shape_zyx) == 3 else (1, *info.shape_zyx)
        dim = imaging.AXES.index(axis)
        plane_shape = tuple(n for i, n in enumerate(shape) if i != dim)
        factor = binning or imaging.auto_binning(plane_shape)
        at = shape[dim] // 2 if index < 0 else min(index, shape[dim] - 1)
        plane = imaging.volume_slice(resolved, axis, at, factor)
        low, high = imaging.contrast_limits(plane, info, low_sigma, high_sigma, per_slice)
        return imaging.to_png(plane, low, high), factor, at

    png, factor, at = await run_in_threadpool(render)
    return Response(png, media_type="image/png",
                    headers={**PNG_HEADERS, "X-Binning": str(factor), "X-Index": str(at)})


MAX_3D_SIZE_PX = 128


@router.get("/volume/data")
async def volume_data(request: Request, path: str, max_size: int = 64) -> Response:
    """The volume binned to at most ``max_size`` voxels per axis, as raw little-endian float32
    [z, y, x] (for the browser's isosurface view); shape, binning and statistics in headers."""
    resolved = _mrc_path(request, path)
    if not 8 <= max_size <= MAX_3D_SIZE_PX:
        raise HTTPException(422, {"message": f"max_size must be 8 to {MAX_3D_SIZE_PX}",
                                  "errors": [{"field": "max_size", "message": "8 to 128"}]})

    def render() -> tuple[bytes, tuple[int, ...], int, float, float]:
        volume, factor = imaging.volume_binned(resolved, max_size)
        return (volume.astype("<f4").tobytes(), volume.shape, factor, float(volume.mean()),
                float(volume.std()) or 1.0)

    body, shape, factor, mean, std = await run_in_threadpool(render)
    info = imaging.volume_info(resolved)
    return Response(body, media_type="application/octet-stream", headers={
        **PNG_HEADERS, "X-Size-Xyz": f"{shape[2]},{shape[1]},{shape[0]}", "X-Binning": str(factor),
        "X-Mean": f"{mean:.6g}", "X-Std": f"{std:.6g}", "X-Pixel-Size-A": f"{info.pixel_size_a:.6g}"})


@router.get("/image")
async def tilt_image(request: Request, path: str, index: int = 0, binning: int = 0,
                     low_sigma: float = -3.0, high_sigma: float = 3.0) -> Response:
    """PNG of one image of a stack (a tilt), contrast from that image's own statistics."""
    resolved = _mrc_path(request, path)

    def render() -> tuple[bytes, int]:
        info = imaging.volume_info(resolved)
        factor = binning or imaging.auto_binning(info.shape_zyx[-2:])
        try:
            plane = imaging.image_plane(resolved, index, factor)
        except IndexError as error:
            raise HTTPException(404, str(error)) from None
        low, high = imaging.contrast_limits(plane, None, low_sigma, high_sigma, True)
        return imaging.to_png(plane, low, high), factor

    png, factor = await run_in_threadpool(render)
    return Response(png, media_type="image/png",
                    headers={**PNG_HEADERS, "X-Binning": str(factor)})


_tables: OrderedDict[tuple, Any] = OrderedDict()  # (set, tomogram, version) -> ParticleTable
_tables_lock = threading.Lock()
TABLE_CACHE = 8


def _tomogram_table(catalog, set_id: int, tomogram: str):
    """``tomogram_particles``, kept for the next request while the set's rows are unchanged (the
    listing and the columns of one page view read the same 10⁵ particles)."""
    version = tuple(catalog.connection.execute(
        "SELECT COUNT(*), MAX(id), MAX(created) FROM items WHERE set_id = ?", (set_id,)).fetchone())
    key = (str(catalog.path), set_id, tomogram, version)
    with _tables_lock:
        if key in _tables:
            _tables.move_to_end(key)
            return _tables[key]
    table = tomogram_particles(catalog, set_id, tomogram)
    with _tables_lock:
        _tables[key] = table
        while len(_tables) > TABLE_CACHE:
            _tables.popitem(last=False)
    return table


@router.get("/particles")
def particles_of_tomogram(request: Request, tomogram: str, source_run: int | None = None,
                          source_output: str | None = None) -> list[dict[str, Any]]:
    """Every particle set holding particles of ``tomogram``, with those particles. A set is
    ``editable`` when a pick.manual run made it from the tomogram set (source_run, source_output)."""
    project = access_of(request).project()
    source_set = None
    if source_run is not None:
        for candidate in project.catalog.sets_of_run(source_run):
            if source_output in (None, candidate.output):
                source_set = candidate.id
    found = []
    for run in project.runs():
        for output_set in project.catalog.sets_of_run(run.id):
            if output_set.item_type != "Particle":
                continue
            table = _tomogram_table(project.catalog, output_set.id, tomogram)
            read_sets = run.record.inputs.get("set_ids", {}).get("tomograms", [])
            editable = run.protocol == "pick.manual" and source_set in read_sets
            if not len(table) and not editable:
                continue
            # big sets come as binary columns (/api/particles/columns): JSON of 10⁵ particles
            # with their rotations took seconds to build and to parse
            inline = editable or len(table) <= INLINE_PARTICLES
            found.append({"run_id": run.id, "run": run.name, "protocol": run.protocol,
                          "output": output_set.output, "state": run.state,
                          "reference": f"{run.name}.{output_set.output}",
                          "set_id": output_set.id, "count": len(table), "editable": editable,
                          "particles": _particle_views(table) if inline else None})
    return found


@router.get("/particles/columns")
def particle_columns(request: Request, set_id: int, tomogram: str) -> Response:
    """The particles of ``tomogram`` in set ``set_id`` as little-endian float32, 7 per particle:
    position x, y, z (Å from the tomogram centre), the rotated Z axis (third column of the
    rotation: the orientation glyph) and the score (NaN: none)."""
    project = access_of(request).project()
    try:
        output_set = project.catalog.set_by_id(set_id)
    except KeyError:
        raise HTTPException(404, f"no set {set_id}") from None
    if output_set.item_type != "Particle":
        raise HTTPException(422, {"message": f"set {set_id} holds {output_set.item_type} items",
                                  "errors": [{"field": "set_id", "message": "not particles"}]})
    table = _tomogram_table(project.catalog, set_id, tomogram)
    columns = np.empty((len(table), PARTICLE_COLUMNS), dtype="<f4")
    if len(table):
        columns[:, :3] = table.positions_a
        columns[:, 3:6] = table.rotations[:, :, 2]
        columns[:, 6] = table.scores
    return Response(columns.tobytes(), media_type="application/octet-stream",
                    headers={**PNG_HEADERS, "X-Count": str(len(table)),
                             "X-Columns": "x_a,y_a,z_a,zaxis_x,zaxis_y,zaxis_z,score"})


def _particle_views(table) -> list[dict[str, Any]]:
    """What the tomogram viewer draws of each particle, read from the table's columns."""
    positions = table.positions_a.tolist()
    rotations = table.rotations.tolist()
    scores = [None if s != s else s for s in table.scores.tolist()]  # NaN: no score
    classes = [None if c != c else int(c) for c in table.class_ids.tolist()]
    return [{"name": n, "position_a": p, "rotation": r, "score": s, "class_id": c}
            for n, p, r, s, c in zip(table.names.tolist(), positions, rotations, scores, classes,
                                     strict=True)]
