"""Pruning picked particles: consensus between pickers, duplicates, membrane normals, vesicles.

Plain functions over arrays: positions are (N, 3) in Å (x, y, z; any common origin), rotations
(N, 3, 3) active reference -> particle, normals (N, 3) unit vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def _check_positions(positions_a: np.ndarray, name: str = "positions_a") -> np.ndarray:
    positions = np.asarray(positions_a, dtype=float)
    if positions.size == 0:
        return positions.reshape(0, 3)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3), got {positions.shape}")
    return positions


def _clusters(positions: np.ndarray, radius_a: float) -> np.ndarray:
    """Connected components of the graph linking points closer than ``radius_a``: labels (N,)."""
    if len(positions) == 0:
        return np.zeros(0, dtype=int)
    pairs = cKDTree(positions).query_pairs(radius_a, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(positions),) * 2)
    return connected_components(graph, directed=False)[1]


# ----------------------------------------------------------------------------- consensus
@dataclass
class ConsensusResult:
    """Groups of particles that agree, which set each member came from, and statistics."""

    groups: list[list[tuple[int, int]]]  # per kept group: (set index, particle index) members
    support: np.ndarray  # number of distinct sets in each kept group
    statistics: dict = field(default_factory=dict)


def consensus(position_sets: list[np.ndarray], tolerance_a: float,
              min_sets: int) -> ConsensusResult:
    """Particles found by at least ``min_sets`` of the sets, within ``tolerance_a`` of each other.

    Each set's particles are matched one-to-one (mutual nearest neighbours within the tolerance)
    to the particles of every other set; matched particles form groups (connected components),
    and a group is kept when it holds particles of ``min_sets`` distinct sets or more.

    Returns
    -------
    ConsensusResult
        ``statistics``: counts per set, groups by support (how many sets agree), pairwise
        agreement fractions (matched / size of the smaller set).
    """
    sets = [_check_positions(p, f"set {i}") for i, p in enumerate(position_sets)]
    if not 1 <= min_sets <= len(sets):
        raise ValueError(f"min_sets {min_sets}: expected 1 … {len(sets)} (number of sets)")
    offsets = np.cumsum([0] + [len(s) for s in sets])
    rows, cols = [], []
    pairwise: dict[str, float] = {}
    for a in range(len(sets)):
        for b in range(a + 1, len(sets)):
            ia, ib = _mutual_matches(sets[a], sets[b], tolerance_a)
            rows.extend(offsets[a] + ia)
            cols.extend(offsets[b] + ib)
            smaller = max(1, min(len(sets[a]), len(sets[b])))
            pairwise[f"{a}-{b}"] = len(ia) / smaller
    total = int(offsets[-1])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(total, total))
    labels = connected_components(graph, directed=False)[1] if total else np.zeros(0, int)
    set_of = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    groups, support = [], []
    by_support: dict[int, int] = {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = len(set(set_of[members].tolist()))
        by_support[count] = by_support.get(count, 0) + 1
        if count >= min_sets:
            groups.append([(int(set_of[m]), int(m - offsets[set_of[m]])) for m in members])
            support.append(count)
    statistics = {"set_sizes": [len(s) for s in sets], "groups_by_support": by_support,
                  "pairwise_agreement": pairwise, "kept": len(groups), "min_sets": min_sets,
                  "tolerance_a": tolerance_a}
    return ConsensusResult(groups, np.asarray(support, dtype=int), statistics)


def _mutual_matches(a: np.ndarray, b: np.ndarray, tolerance_a: float):
    """Index pairs (i in a, j in b) that are each other's nearest neighbour within tolerance."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    dist_ab, near_ab = cKDTree(b).query(a)
    _, near_ba = cKDTree(a).query(b)
    index = np.arange(len(a))
    keep = (dist_ab <= tolerance_a) & (near_ba[near_ab] == index)
    return index[keep], near_ab[keep]


# ----------------------------------------------------------------------------- duplicates
def remove_duplicates(positions_a: np.ndarray, distance_a: float,
                      scores: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Merge particles closer than ``distance_a`` (transitively) into their average position.

    Returns
    -------
    merged_a : (M, 3)
        Mean position of each group (score-weighted when scores are given and positive).
    members : list of int arrays
        Indices of the input particles in each group, best score first.
    """
    positions = _check_positions(positions_a)
    labels = _clusters(positions, distance_a)
    merged, members = [], []
    score_array = None if scores is None else np.asarray(scores, dtype=float)
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, int)
    alone = np.flatnonzero(sizes[labels] == 1)  # most particles: their own group, as they are
    merged.extend(positions[alone])
    members.extend(alone[:, None])
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for label in np.flatnonzero(sizes > 1):
        group = order[starts[label]:starts[label + 1]]
        if score_array is not None:
            group = group[np.argsort(-score_array[group], kind="stable")]
            weights = np.clip(score_array[group], 0, None)
            weights = weights if weights.sum() > 0 else np.ones(len(group))
        else:
            weights = np.ones(len(group))
        merged.append((positions[group] * weights[:, None]).sum(0) / weights.sum())
        members.append(group)
    order = np.argsort([g[0] for g in members], kind="stable")  # keep the input order
    return np.asarray([merged[i] for i in order]).reshape(-1, 3), [members[i] for i in order]


# ----------------------------------------------------------------------------- normals
def particle_axes(rotations: np.ndarray) -> np.ndarray:
    """The reference Z axis carried by each rotation: R @ [0, 0, 1], shape (N, 3)."""
    return np.asarray(rotations, dtype=float).reshape(-1, 3, 3)[:, :, 2]


def normal_angles_deg(rotations: np.ndarray, normals: np.ndarray,
                      ignore_polarity: bool = False) -> np.ndarray:
    """Angle (°) between each particle's axis and its membrane normal (0 … 180, or 0 … 90)."""
    axes = particle_axes(rotations)
    normals = np.asarray(normals, dtype=float).reshape(-1, 3)
    if len(axes) != len(normals):
        raise ValueError(f"{len(axes)} rotations but {len(normals)} normals")
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    cosine = np.einsum("ij,ij->i", axes, normals)
    if ignore_polarity:
        cosine = np.abs(cosine)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def filter_by_normal(rotations: np.ndarray, normals: np.ndarray, tolerance_deg: float,
                     ignore_polarity: bool = False) -> np.ndarray:
    """Boolean mask: the particle's axis lies within ``tolerance_deg`` of the normal."""
    return normal_angles_deg(rotations, normals, ignore_polarity) <= tolerance_deg


def normals_from_neighbours(positions_a: np.ndarray, centre_a: np.ndarray | None = None,
                            neighbours: int = 8) -> np.ndarray:
    """Surface normals of points on a membrane from the PCA of their nearest neighbours.

    Signs point away from ``centre_a`` (default: the points' centroid).
    """
    positions = _check_positions(positions_a)
    k = min(len(positions), neighbours + 1)
    if k < 3:
        raise ValueError("need at least 3 points to estimate normals")
    _, near = cKDTree(positions).query(positions, k=k)
    local = positions[near] - positions[near].mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(local, full_matrices=False)
    normals = vt[:, -1, :]
    centre = positions.mean(0) if centre_a is None else np.asarray(centre_a, dtype=float)
    sign = np.sign(np.einsum("ij,ij->i", positions - centre, normals))
    sign[sign == 0] = 1
    return normals * sign[:, None]


# ----------------------------------------------------------------------------- ellipsoids
@dataclass
class Ellipsoid:
    """x^T A x + b^T x = 1 form fitted to points; centre, semi-axes and axes (columns)."""

    centre_a: np.ndarray
    radii_a: np.ndarray
    axes: np.ndarray

    def distance_a(self, points_a: np.ndarray) -> np.ndarray:
        """Approximate signed distance (Å, + outside) of points (N, 3) to the surface."""
        local = (np.asarray(points_a, dtype=float) - self.centre_a) @ self.axes
        scaled = local / self.radii_a
        norm = np.linalg.norm(scaled, axis=1)
        gradient = np.linalg.norm(scaled / self.radii_a, axis=1) / np.maximum(norm, 1e-12)
        return (norm - 1.0) / np.maximum(gradient, 1e-12)


def fit_ellipsoid(points_a: np.ndarray, min_radius_a: float = 1.0) -> Ellipsoid:
    """Least-squares ellipsoid through points (N ≥ 9, N, 3) by the algebraic quadric fit.

    Raises ValueError when the points do not define an ellipsoid (e.g. a flat patch).
    """
    points = _check_positions(points_a)
    if len(points) < 9:
        raise ValueError(f"an ellipsoid fit needs at least 9 points, got {len(points)}")
    shift = points.mean(0)
    scale = max(float(np.abs(points - shift).max()), 1e-9)
    x, y, z = ((points - shift) / scale).T
    design = np.column_stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z,
                              2 * x, 2 * y, 2 * z])
    coefficients, *_ = np.linalg.lstsq(design, np.ones(len(points)), rcond=None)
    a, b, c, d, e, f, g, h, i = coefficients
    quadric = np.array([[a, d, e], [d, b, f], [e, f, c]])
    linear = np.array([g, h, i])
    try:
        centre = -np.linalg.solve(quadric, linear)
    except np.linalg.LinAlgError as error:
        raise ValueError("points do not define an ellipsoid (singular quadric)") from error
    level = 1.0 + centre @ quadric @ centre
    values, vectors = np.linalg.eigh(quadric / level)
    if np.any(values <= 0):
        raise ValueError("points do not define an ellipsoid (quadric is not positive definite)")
    radii = np.maximum(scale / np.sqrt(values), min_radius_a)
    return Ellipsoid(centre * scale + shift, radii, vectors)


def ellipsoid_inliers(points_a: np.ndarray, max_distance_a: float,
                      iterations: int = 3) -> tuple[np.ndarray, Ellipsoid | None]:
    """Fit an ellipsoid, drop points farther than ``max_distance_a`` from it, refit; repeat.

    Returns the boolean mask of kept points and the final ellipsoid (None when no fit).
    """
    points = _check_positions(points_a)
    keep = np.ones(len(points), dtype=bool)
    ellipsoid = None
    for _ in range(iterations):
        try:
            ellipsoid = fit_ellipsoid(points[keep])
        except ValueError:
            break
        new_keep = np.abs(ellipsoid.distance_a(points)) <= max_distance_a
        if np.array_equal(new_keep, keep) or new_keep.sum() < 9:
            keep = new_keep if new_keep.sum() >= 9 else keep
            break
        keep = new_keep
    if ellipsoid is not None:
        keep = np.abs(ellipsoid.distance_a(points)) <= max_distance_a
    return keep, ellipsoid


# ----------------------------------------------------------------------------- filters
def inside_region(positions_a: np.ndarray, low_a: np.ndarray, high_a: np.ndarray) -> np.ndarray:
    """Boolean mask of particles inside the box [low, high] (Å, x y z)."""
    positions = _check_positions(positions_a)
    return np.all((positions >= np.asarray(low_a)) & (positions <= np.asarray(high_a)), axis=1)


def inside_mask(positions_a: np.ndarray, mask: np.ndarray, pixel_size_a: float) -> np.ndarray:
    """Boolean mask of particles whose voxel (position / pixel + N // 2) is non-zero in ``mask``."""
    positions = _check_positions(positions_a)
    shape_xyz = np.array(mask.shape[::-1])
    voxels = np.rint(positions / pixel_size_a + shape_xyz // 2).astype(int)
    inside = np.all((voxels >= 0) & (voxels < shape_xyz), axis=1)
    result = np.zeros(len(positions), dtype=bool)
    v = voxels[inside]
    result[inside] = mask[v[:, 2], v[:, 1], v[:, 0]] != 0
    return result
