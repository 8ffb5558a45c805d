"""copick projects: picks JSON (location + 4×4 transform per point) and OME-Zarr tomograms.

Layout written (copick's file-system layout)::

    copick_config.json
    ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json
    ExperimentRuns/<run>/VoxelSpacing<spacing:.3f>/<tomo_type>.zarr   (OME-Zarr 0.4, zarr v2)

A pick's ``location`` is in Å from voxel 0 of the tomogram (voxel i at ``i × spacing``, the
OME-Zarr convention), so ``location = position_a + (N // 2) × spacing``. ``transformation_`` is a
4×4 matrix whose rotation part is the reference-to-particle rotation (CETS: right-handed, active)
and whose translation is a sub-voxel offset in Å, added to the location.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomoweave.model import Particle


class CopickFormatError(ValueError):
    """A malformed copick file; names the file, point and what was expected."""


def read_copick_picks(
    path: str | Path, voxel_spacing_a: float, tomo_size_xyz: tuple[int, int, int],
) -> list[Particle]:
    """Particles of a copick picks JSON (positions from the tomogram centre)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CopickFormatError(f"{path.name}: not a readable json file ({error})") from error
    if "points" not in data:
        raise CopickFormatError(f"{path.name}: key 'points' missing (expected copick picks)")
    run = str(data.get("run_name") or path.parent.parent.name)
    label = str(data.get("pickable_object_name", "particle"))
    centre = np.asarray(tomo_size_xyz, dtype=int) // 2 * voxel_spacing_a
    particles = []
    for index, point in enumerate(data["points"]):
        try:
            location = np.array([point["location"][k] for k in "xyz"], dtype=float)
            transform = np.asarray(point.get("transformation_", np.eye(4)), dtype=float)
        except (KeyError, TypeError, ValueError) as error:
            raise CopickFormatError(f"{path.name}: point {index}: expected location x/y/z and a "
                                    f"4×4 transformation_ ({error})") from error
        if transform.shape != (4, 4):
            raise CopickFormatError(f"{path.name}: point {index}: transformation_ has shape "
                                    f"{transform.shape}, expected (4, 4)")
        position = location + transform[:3, 3] - centre
        particles.append(Particle(
            name=f"{run}/{label}/{point.get('instance_id', index)}", tomogram=run,
            position_a=tuple(float(v) for v in position), rotation=transform[:3, :3].tolist(),
            score=float(point["score"]) if point.get("score") is not None else None))
    return particles


def write_copick_picks(
    path: str | Path, particles: Sequence[Particle], voxel_spacing_a: float,
    tomo_size_xyz: tuple[int, int, int], object_name: str = "particle",
    user_id: str = "tomoweave", session_id: str = "0",
) -> None:
    """Write one copick picks JSON for the particles of one run."""
    centre = np.asarray(tomo_size_xyz, dtype=int) // 2 * voxel_spacing_a
    points = []
    for index, particle in enumerate(particles):
        transform = np.eye(4)
        transform[:3, :3] = particle.rotation_matrix
        location = np.asarray(particle.position_a) + centre
        points.append({"location": dict(zip("xyz", (float(v) for v in location), strict=True)),
                       "transformation_": transform.tolist(), "instance_id": index,
                       "score": particle.score if particle.score is not None else 1.0})
    data = {"pickable_object_name": object_name, "user_id": user_id, "session_id": session_id,
            "run_name": particles[0].tomogram if particles else "", "voxel_spacing": None,
            "unit": "angstrom", "points": points, "trust_orientation": True}
    _write_json(Path(path), data)


def copick_picks_path(root: str | Path, run: str, object_name: str, user_id: str = "tomoweave",
                      session_id: str = "0") -> Path:
    return Path(root) / "ExperimentRuns" / run / "Picks" / f"{user_id}_{session_id}_{object_name}.json"


def write_copick_config(root: str | Path, object_names: Sequence[str], name: str = "tomoweave"):
    """A minimal copick_config.json for a file-system project at ``root``."""
    objects = [{"name": n, "is_particle": True, "label": i + 1, "color": [200, 100, 50, 255],
                "radius": 60} for i, n in enumerate(object_names)]
    _write_json(Path(root) / "copick_config.json", {
        "name": name, "description": "exported by tomoweave", "version": "0.5.0",
        "pickable_objects": objects, "config_type": "filesystem",
        "overlay_root": f"local://{Path(root).resolve()}", "overlay_fs_args": {"auto_mkdir": True}})


def write_ome_zarr(path: str | Path, volume: np.ndarray, voxel_spacing_a: float) -> None:
    """A single-scale OME-Zarr 0.4 image (zarr format 2) of a volume [z, y, x], scale in Å."""
    import zarr  # optional dependency: only the copick export needs it

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    chunks = tuple(min(64, n) for n in volume.shape)
    group.create_array("0", data=np.asarray(volume, dtype=np.float32), chunks=chunks)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": Path(path).stem,
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [voxel_spacing_a] * 3}]}],
    }]


def read_ome_zarr(path: str | Path) -> tuple[np.ndarray, float]:
    """The first (finest) scale of an OME-Zarr image: (float32 [z, y, x], voxel size in Å)."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        multiscale = group.attrs["multiscales"][0]
        dataset = multiscale["datasets"][0]
    except Exception as error:  # zarr raises several kinds for a missing/odd store
        raise CopickFormatError(f"{Path(path).name}: not an OME-Zarr image ({error})") from error
    scale = next(t["scale"] for t in dataset["coordinateTransformations"] if t["type"] == "scale")
    return np.asarray(group[dataset["path"]][...], dtype=np.float32), float(scale[-1])


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
    temporary.replace(path)
