"""EMAN2 tomography json: picked boxes (``info/<tomogram>_info.json``) and e2spt orientations.

``boxes_3d`` rows are ``[x, y, z, source, score, class]`` in pixels of the tomogram the json
describes, counted from voxel 0 (centre ``N // 2``); ``class_list`` names the classes.
Orientations come from e2spt's ``particle_parms_NN.json``: ``xform.align3d`` (an EMAN
``Transform`` of type "eman", az/alt/phi) brings the particle onto the reference, and
``geometry.eman_to_matrix`` turns its angles into the reference-to-particle rotation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomoweave.geometry import centered_a_to_pixels, eman_to_matrix, matrix_to_eman, pixels_to_centered_a
from tomoweave.model import Particle


class EmanFormatError(ValueError):
    """A malformed EMAN2 json; names the file, key/row and what was expected."""


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise EmanFormatError(f"{path.name}: not a readable json file ({error})") from error


def read_eman_boxes(
    path: str | Path, pixel_size_a: float, tomo_size_xyz: tuple[int, int, int],
    tomogram: str | None = None,
) -> list[Particle]:
    """Particles (identity orientation) from the ``boxes_3d`` of an EMAN2 info json."""
    path = Path(path)
    data = _load(path)
    if "boxes_3d" not in data:
        raise EmanFormatError(f"{path.name}: key 'boxes_3d' missing (expected an EMAN2 "
                              f"info/<tomogram>_info.json)")
    name = tomogram or path.stem.removesuffix("_info")
    particles = []
    for row, box in enumerate(data["boxes_3d"], start=1):
        try:
            xyz = [float(v) for v in box[:3]]
        except (TypeError, ValueError, IndexError) as error:
            raise EmanFormatError(f"{path.name}: boxes_3d row {row}: expected [x, y, z, ...], "
                                  f"got {box!r}") from error
        centred = pixels_to_centered_a(xyz, tomo_size_xyz, pixel_size_a)
        score = float(box[4]) if len(box) > 4 and isinstance(box[4], int | float) else None
        class_id = int(box[5]) + 1 if len(box) > 5 and isinstance(box[5], int) else None
        particles.append(Particle(name=f"{name}/{row}", tomogram=name,
                                  position_a=tuple(float(v) for v in centred),
                                  score=score, class_id=class_id))
    return particles


def write_eman_boxes(
    path: str | Path, particles: Sequence[Particle], pixel_size_a: float,
    tomo_size_xyz: tuple[int, int, int], class_name: str = "particles",
) -> None:
    """Write an EMAN2 info json with ``boxes_3d`` and ``class_list``."""
    boxes = []
    for particle in particles:
        xyz = centered_a_to_pixels(particle.position_a, tomo_size_xyz, pixel_size_a)
        boxes.append([float(v) for v in xyz] + ["tomoweave", particle.score or 0.0,
                                                 max(0, (particle.class_id or 1) - 1)])
    classes = sorted({box[5] for box in boxes}) or [0]
    data = {"boxes_3d": boxes, "apix_unbin": pixel_size_a,
            "class_list": {str(c): {"name": f"{class_name}_{c}" if c else class_name,
                                    "boxsize": 32} for c in classes}}
    _write(Path(path), data)


def read_eman_orientations(path: str | Path) -> list[np.ndarray]:
    """Rotation matrices (reference to particle) of an e2spt particle_parms json, in key order."""
    path = Path(path)
    data = _load(path)
    rotations = []
    for key in sorted(data, key=_particle_index):
        transform = data[key].get("xform.align3d") if isinstance(data[key], dict) else None
        if not isinstance(transform, dict) or not {"az", "alt", "phi"} <= transform.keys():
            raise EmanFormatError(f"{path.name}: {key}: expected 'xform.align3d' with az, alt, "
                                  f"phi")
        rotations.append(eman_to_matrix(transform["az"], transform["alt"], transform["phi"]))
    return rotations


def write_eman_orientations(path: str | Path, particles: Sequence[Particle], stack: str) -> None:
    """Write an e2spt particle_parms json (one xform.align3d per particle of ``stack``)."""
    data = {}
    for index, particle in enumerate(particles):
        az, alt, phi = matrix_to_eman(particle.rotation_matrix)
        data[str((stack, index))] = {
            "score": particle.score or 0.0,
            "xform.align3d": {"__class__": "Transform", "type": "eman", "az": az, "alt": alt,
                              "phi": phi, "tx": 0.0, "ty": 0.0, "tz": 0.0, "mirror": 0,
                              "scale": 1.0}}
    _write(Path(path), data)


def _particle_index(key: str) -> int:
    digits = "".join(ch if ch.isdigit() else " " for ch in key).split()
    return int(digits[-1]) if digits else 0


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
    temporary.replace(path)
