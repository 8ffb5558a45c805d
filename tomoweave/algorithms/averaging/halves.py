"""Gold-standard half sets that split tomograms by region, so neighbours never straddle them.

Particles whose boxes overlap share density; if they fell into different halves, the halves
would not be independent. Particles are therefore grouped into clusters of overlapping boxes
(connected components of "closer than the box"), and within each tomogram the clusters are
ordered along X and cut at the particle median: each tomogram gives a left region to one half
and a right region to the other. The half that receives the left region alternates between
tomograms, which keeps the halves balanced when tomograms are split unevenly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def split_half_sets(positions_a: np.ndarray, tomograms: Sequence[str],
                    exclusion_distance_a: float) -> np.ndarray:
    """Half set (1 or 2) of every particle.

    Parameters
    ----------
    positions_a : (N, 3) float
        Particle positions (x, y, z), Å from their tomogram's centre.
    tomograms : sequence of N str
        The tomogram of each particle.
    exclusion_distance_a : float
        Particles closer than this (e.g. the box size in Å) always share a half.
    """
    positions = np.asarray(positions_a, dtype=float).reshape(-1, 3)
    names = np.asarray(list(tomograms))
    if len(names) != len(positions):
        raise ValueError(f"{len(positions)} positions but {len(names)} tomogram names")
    halves = np.zeros(len(positions), dtype=np.int8)
    surplus = 0  # particles by which half 1 leads so far
    for name in dict.fromkeys(names.tolist()):
        members = np.flatnonzero(names == name)
        cluster = _clusters(positions[members], exclusion_distance_a)
        order = _clusters_along_x(positions[members], cluster)
        cumulative = np.cumsum([np.sum(cluster == c) for c in order])
        first_half = set(order[: int(np.searchsorted(cumulative, len(members) / 2.0)) + 1])
        left = np.array([c in first_half for c in cluster])
        left_to_one = surplus <= 0
        halves[members] = np.where(left == left_to_one, 1, 2)
        surplus += int(np.sum(halves[members] == 1) - np.sum(halves[members] == 2))
    return halves


def _clusters(positions: np.ndarray, distance_a: float) -> np.ndarray:
    pairs = cKDTree(positions).query_pairs(distance_a, output_type="ndarray")
    from scipy.sparse import coo_matrix

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(positions),) * 2) if len(pairs) else \
        coo_matrix((len(positions),) * 2)
    return connected_components(graph, directed=False)[1]


def _clusters_along_x(positions: np.ndarray, cluster: np.ndarray) -> list[int]:
    labels = np.unique(cluster)
    centres = [positions[cluster == c, 0].mean() for c in labels]
    return [int(c) for c in labels[np.argsort(centres, kind="stable")]]
