"""Map back: place a map at each particle's pose into a tomogram-sized volume.

A copy of the map (reference frame, centre at index B // 2) is drawn at every particle with one
cubic-spline interpolation: output voxel x (pixels, x y z) takes the map's value at
Rᵀ (x − c) + B // 2, where c is the particle's centre (the tomogram's centre index N // 2 plus
the particle's position in pixels) and R its active rotation reference → particle. Copies add
(mode "copy"), or voxels where a copy exceeds a threshold take the copy's label (mode "label":
a label map, one integer per particle or per class).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from scipy import ndimage


class MapBackMode(StrEnum):
    """How copies enter the output volume."""

    COPY = "copy"
    LABEL = "label"


def place_copies(shape_zyx: tuple[int, int, int], volume: np.ndarray, positions_px: np.ndarray,
                 rotations: np.ndarray, *, mode: MapBackMode | str = MapBackMode.COPY,
                 threshold: float | None = None, labels: np.ndarray | None = None,
                 scales: np.ndarray | None = None) -> np.ndarray:
    """A volume of ``shape_zyx`` with a copy of ``volume`` at every pose.

    Parameters
    ----------
    shape_zyx : (Z, Y, X)
        The tomogram's grid.
    volume : (B, B, B) float32
        The map, at the tomogram's pixel size, centre at index B // 2.
    positions_px : (N, 3)
        Particle centres (x, y, z) in pixels from the tomogram's centre (index N // 2).
    rotations : (N, 3, 3)
        Active rotations reference → particle.
    mode : "copy" or "label"
        Sum of the copies (float32), or a label map (int32, 0 = background).
    threshold : float, optional
        Label mode: a voxel belongs to a copy where the copy exceeds it (default half the map's
        maximum).
    labels : (N,) int, optional
        Label mode: the label of each copy (default 1 … N); copies drawn later win overlaps.
    scales : (N,) float, optional
        Copy mode: a factor per copy (default 1).
    """
    mode = MapBackMode(mode)
    positions = np.asarray(positions_px, dtype=float).reshape(-1, 3)
    rotations = np.asarray(rotations, dtype=float).reshape(-1, 3, 3)
    if len(positions) != len(rotations):
        raise ValueError(f"map back: {len(positions)} positions but {len(rotations)} rotations")
    box = volume.shape[0]
    coefficients = ndimage.spline_filter(np.asarray(volume, np.float32), order=3,
                                         output=np.float32)
    if mode is MapBackMode.LABEL:
        out = np.zeros(shape_zyx, dtype=np.int32)
        level = 0.5 * float(np.max(volume)) if threshold is None else float(threshold)
        labels = (np.arange(1, len(positions) + 1) if labels is None
                  else np.asarray(labels, dtype=np.int32))
    else:
        out = np.zeros(shape_zyx, dtype=np.float32)
        scales = np.ones(len(positions)) if scales is None else np.asarray(scales, float)
    centre = np.asarray(shape_zyx[::-1]) // 2  # x, y, z
    half = int(np.ceil(box * np.sqrt(3) / 2)) + 1
    for i in range(len(positions)):
        drawn = _draw(coefficients, centre + positions[i], rotations[i], shape_zyx, half)
        if drawn is None:
            continue
        region, values = drawn
        if mode is MapBackMode.LABEL:
            out[region] = np.where(values > level, labels[i], out[region])
        else:
            out[region] += scales[i] * values
    return out


def _draw(coefficients: np.ndarray, centre_px: np.ndarray, rotation: np.ndarray,
          shape_zyx: tuple[int, int, int], half: int):
    """(region slices, values) of one rotated copy around ``centre_px`` (x, y, z), or None."""
    box = coefficients.shape[0]
    size = np.asarray(shape_zyx[::-1])
    low = np.maximum(np.floor(centre_px).astype(int) - half, 0)
    high = np.minimum(np.floor(centre_px).astype(int) + half + 1, size)
    if np.any(high <= low):
        return None
    axes = [np.arange(low[d], high[d]) for d in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    offsets = np.stack([xx, yy, zz], -1) - centre_px
    reference = offsets @ rotation + box // 2  # rows: Rᵀ (x − c), in the map's x y z
    coordinates = np.stack([reference[..., 2], reference[..., 1], reference[..., 0]])
    values = ndimage.map_coordinates(coefficients, coordinates.reshape(3, -1), order=3,
                                     prefilter=False, mode="constant", cval=0.0)
    region = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
    return region, values.reshape(zz.shape).astype(np.float32)


def chimerax_script(tomogram_file: str, placed_file: str, pixel_size_a: float, *,
                    level: float, label_map: bool = False,
                    particles_file: str | None = None) -> str:
    """A ChimeraX command script (.cxc) showing the tomogram with the placed copies.

    Parameters
    ----------
    tomogram_file, placed_file : str
        Paths as ChimeraX should open them (relative to the script's folder works when ChimeraX
        runs it from there: ``chimerax --cmd "cd DIR; open script.cxc"``).
    pixel_size_a : float
        Voxel size of both volumes (they overlay voxel for voxel).
    level : float
        Contour level of the placed copies (a label map: 0.5, every label).
    label_map : bool
        The placed volume is a label map (drawn as one surface per label region).
    particles_file : str, optional
        A particle list (RELION STAR) for ArtiaX, named in a comment.
    """
    lines = ["# tomoweave map back: the tomogram (#1) and the placed copies (#2)",
             f"open {_quoted(tomogram_file)} format mrc",
             f"open {_quoted(placed_file)} format mrc",
             f"volume #1,2 voxelSize {pixel_size_a:g}",
             "volume #1 style image",
             f"volume #2 style surface level {level:g} color {'cornflowerblue' if label_map else 'gold'}",
             "set bgColor black",
             "lighting soft",
             "view"]
    if particles_file:
        lines.insert(1, f"# particle list for ArtiaX (RELION STAR): {particles_file}")
    return "\n".join(lines) + "\n"


def _quoted(path: str) -> str:
    return f'"{path}"' if any(c.isspace() for c in path) else path
