"""Membrane detection in tomograms and oriented points on membrane surfaces.

A membrane is a thin sheet: across it the density profile has one strong curvature, along it
almost none. The Hessian of the Gaussian-smoothed tomogram (scale ~ the membrane's thickness)
therefore has one large eigenvalue (negative for a bright sheet) and two small ones. The
"sheetness" ``-λ1 · exp(-(λ2/λ1)² / 2ρ²)`` (λ sorted by magnitude) is large on sheets and small on
blobs (three large eigenvalues) and filaments (two), and the eigenvector of λ1 is the normal.
Voxels are kept by a hysteresis threshold, thinned to the sheet's middle by non-maximum
suppression along the normal, and labelled per membrane as connected components.

Conventions: volumes [z, y, x]; normals and positions returned in (x, y, z) order; lengths in
pixels inside, Å at the interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tomoweave.geometry.rotations import rotation_y, rotation_z


@dataclass
class MembraneSegmentation:
    """Labels (0 = background, 1…K membranes, int32 [z, y, x]), sheetness and unit normals."""

    labels: np.ndarray
    sheetness: np.ndarray  # float32 [z, y, x]
    normals_xyz: np.ndarray  # float32 [3, z, y, x], (x, y, z) components
    threshold: float

    @property
    def count(self) -> int:
        return int(self.labels.max())


def hessian_sheetness(volume: np.ndarray, sigma_px: float, polarity: str = "dark",
                      plate_ratio: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Sheetness and normal field from the scale-normalised Hessian.

    Parameters
    ----------
    volume : array (Z, Y, X)
    sigma_px : float
        Gaussian scale in voxels, about half the membrane's thickness.
    polarity : "dark" or "bright"
        Contrast of the membrane (dark in cryo-ET tomograms of unstained ice).
    plate_ratio : float
        Tolerance on |λ2| / |λ1| (smaller: stricter sheets).

    Returns
    -------
    sheetness : float32 (Z, Y, X), ≥ 0
    normals_xyz : float32 (3, Z, Y, X), unit vectors (x, y, z), sign arbitrary
    """
    if polarity not in ("dark", "bright"):
        raise ValueError(f"polarity '{polarity}': expected dark or bright")
    data = np.asarray(volume, dtype=np.float32)
    data = -data if polarity == "dark" else data
    data = (data - data.mean()) / max(float(data.std()), 1e-12)
    hessian = np.empty(data.shape + (3, 3), dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            component = ndimage.gaussian_filter(data, sigma_px, order=order) * sigma_px**2
            hessian[..., i, j] = component
            hessian[..., j, i] = component
    sheetness = np.zeros(data.shape, dtype=np.float32)
    normals = np.zeros((3,) + data.shape, dtype=np.float32)
    flat_h = hessian.reshape(-1, 3, 3)
    flat_s, flat_n = sheetness.reshape(-1), normals.reshape(3, -1)
    chunk = 1 << 18
    for start in range(0, flat_h.shape[0], chunk):
        values, vectors = np.linalg.eigh(flat_h[start:start + chunk])
        order = np.argsort(-np.abs(values), axis=1)
        values = np.take_along_axis(values, order, axis=1)
        first = np.take_along_axis(vectors, order[:, None, :1], axis=2)[..., 0]  # (n, 3) zyx
        lam1, lam2 = values[:, 0], values[:, 1]
        ratio = lam2 / np.where(lam1 == 0, 1.0, lam1)
        score = np.where(lam1 < 0, -lam1 * np.exp(-(ratio**2) / (2 * plate_ratio**2)), 0.0)
        flat_s[start:start + chunk] = score
        flat_n[:, start:start + chunk] = first[:, ::-1].T  # zyx -> xyz
    return sheetness, normals


def _non_max_along_normal(sheetness: np.ndarray, normals_xyz: np.ndarray,
                          candidate: np.ndarray) -> np.ndarray:
    """Keep candidates at least as strong as their neighbours one voxel along ± the normal."""
    points = np.argwhere(candidate)
    if points.size == 0:
        return candidate
    step_zyx = normals_xyz[::-1][:, candidate].T  # (n, 3) in zyx
    keep = np.ones(len(points), dtype=bool)
    value = sheetness[candidate]
    upper = np.array(sheetness.shape) - 1
    for sign in (1.0, -1.0):
        neighbour = np.clip(np.rint(points + sign * step_zyx).astype(int), 0, upper)
        keep &= value >= sheetness[tuple(neighbour.T)]
    thin = np.zeros_like(candidate)
    thin[tuple(points[keep].T)] = True
    return thin


def segment_membranes(volume: np.ndarray, pixel_size_a: float, thickness_a: float = 50.0,
                      polarity: str = "dark", threshold: float | None = None,
                      min_area_a2: float = 2.0e5, thin: bool = True) -> MembraneSegmentation:
    """Detect membranes and label each one.

    Parameters
    ----------
    volume : array (Z, Y, X)
    pixel_size_a : float
    thickness_a : float
        Expected membrane thickness (sets the Hessian scale).
    threshold : float, optional
        Sheetness level; by default the robust mean + 6 robust std of the positive sheetness.
        The hysteresis low level is half of it.
    min_area_a2 : float
        Membranes smaller than this area (Å²) are dropped.
    thin : bool
        Reduce each sheet to its middle (one voxel thick) before labelling.
    """
    sigma_px = max(1.0, 0.5 * thickness_a / pixel_size_a)
    sheetness, normals = hessian_sheetness(volume, sigma_px, polarity)
    if threshold is None:
        positive = sheetness[sheetness > 0]
        median = float(np.median(positive)) if positive.size else 0.0
        spread = 1.4826 * float(np.median(np.abs(positive - median))) if positive.size else 1.0
        threshold = median + 6.0 * spread
    strong = sheetness >= threshold
    weak = sheetness >= 0.5 * threshold
    structure = np.ones((3, 3, 3), dtype=bool)
    weak_labels, _ = ndimage.label(weak, structure=structure)
    keep_ids = np.unique(weak_labels[strong])
    mask = np.isin(weak_labels, keep_ids[keep_ids > 0])
    if thin:
        mask = _non_max_along_normal(sheetness, normals, mask)
    labels, count = ndimage.label(mask, structure=structure)
    min_voxels = min_area_a2 / pixel_size_a**2 * (1.0 if thin else 2.0 * sigma_px)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    relabel = np.zeros(count + 1, dtype=np.int32)
    big = np.flatnonzero(sizes >= min_voxels)
    order = big[np.argsort(-sizes[big], kind="stable")]  # label 1 is the largest membrane
    relabel[order + 1] = np.arange(1, len(order) + 1)
    return MembraneSegmentation(relabel[labels], sheetness, normals, float(threshold))


def oriented_points(segmentation: MembraneSegmentation, spacing_px: float,
                    outward: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on each membrane about ``spacing_px`` apart, with unit normals.

    The normal's sign points away from the membrane's centroid when ``outward`` (for a vesicle:
    out of it), towards it otherwise.

    Returns
    -------
    positions_xyz : float (N, 3), voxel coordinates (x, y, z)
    normals_xyz : float (N, 3)
    membrane_ids : int (N,)
    """
    positions, normals, ids = [], [], []
    for label in range(1, segmentation.count + 1):
        voxels = np.argwhere(segmentation.labels == label)  # zyx
        if voxels.size == 0:
            continue
        strength = segmentation.sheetness[tuple(voxels.T)]
        cells = np.floor(voxels / max(spacing_px, 1.0)).astype(np.int64)
        # one voxel per cell: the strongest, so points sit on the sheet's ridge
        order = np.lexsort((-strength, cells[:, 2], cells[:, 1], cells[:, 0]))
        first = np.ones(len(order), dtype=bool)
        sorted_cells = cells[order]
        first[1:] = np.any(sorted_cells[1:] != sorted_cells[:-1], axis=1)
        chosen = voxels[order[first]]
        chosen = _thin_by_distance(chosen, spacing_px)
        normal = segmentation.normals_xyz[:, chosen[:, 0], chosen[:, 1], chosen[:, 2]].T
        xyz = chosen[:, ::-1] + _offset_along_normal(segmentation.sheetness, chosen, normal)
        centroid = voxels[:, ::-1].mean(axis=0)
        sign = np.sign(np.einsum("ij,ij->i", xyz - centroid, normal))
        sign[sign == 0] = 1.0
        normal = normal * (sign if outward else -sign)[:, None]
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        positions.append(xyz)
        normals.append(normal)
        ids.append(np.full(len(xyz), label))
    if not positions:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=int)
    return np.concatenate(positions), np.concatenate(normals), np.concatenate(ids)


def _offset_along_normal(sheetness: np.ndarray, voxels_zyx: np.ndarray,
                         normals_xyz: np.ndarray) -> np.ndarray:
    """Sub-voxel shift (x, y, z) to the sheetness maximum along the normal (parabola fit)."""
    upper = np.array(sheetness.shape) - 1
    values = []
    for step in (-1.0, 0.0, 1.0):
        where = np.clip(np.rint(voxels_zyx + step * normals_xyz[:, ::-1]).astype(int), 0, upper)
        values.append(sheetness[tuple(where.T)])
    low, mid, high = values
    curvature = low - 2 * mid + high
    safe = np.where(curvature < 0, curvature, -1.0)
    along = np.where(curvature < 0, np.clip(0.5 * (low - high) / safe, -0.5, 0.5), 0.0)
    return along[:, None] * normals_xyz


def _thin_by_distance(points: np.ndarray, spacing_px: float) -> np.ndarray:
    """Greedy: drop points closer than 0.7 × spacing to an already kept one (grid corners)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    removed = np.zeros(len(points), dtype=bool)
    for i in range(len(points)):
        if removed[i]:
            continue
        for j in tree.query_ball_point(points[i], 0.7 * spacing_px):
            if j > i:
                removed[j] = True
    return points[~removed]


def rotation_from_normal(normal_xyz: np.ndarray, in_plane_deg: float = 0.0) -> np.ndarray:
    """Rotation whose image of the reference Z axis is ``normal_xyz`` (ZYZ, psi = in-plane)."""
    n = np.asarray(normal_xyz, dtype=float)
    n = n / max(np.linalg.norm(n), 1e-12)
    theta = np.degrees(np.arccos(np.clip(n[2], -1.0, 1.0)))
    phi = np.degrees(np.arctan2(n[1], n[0]))
    return rotation_z(phi) @ rotation_y(theta) @ rotation_z(in_plane_deg)
