"""Point-group symmetry: symbols and operators, shared by picking, averaging and post-processing.

Operators are 3×3 active rotations in (x, y, z) of the reference frame; a map with symmetry
``G`` is invariant under every operator of ``G``.
"""

from __future__ import annotations

import numpy as np

from tomoweave.geometry.rotations import rotation_x, rotation_z


def parse_symmetry(symmetry: str) -> tuple[str, int]:
    """Split a point-group symbol ("C1", "C7", "D2", "T", "O", "I") into (kind, order)."""
    text = (symmetry or "C1").strip().upper()
    if text in ("T", "O", "I"):
        return text, {"T": 12, "O": 24, "I": 60}[text]
    if len(text) >= 2 and text[0] in "CD" and text[1:].isdigit() and int(text[1:]) >= 1:
        return text[0], int(text[1:])
    raise ValueError(f"symmetry '{symmetry}': expected C<n>, D<n>, T, O or I")


def symmetry_operators(symmetry: str) -> np.ndarray:
    """Rotations of a C<n> or D<n> point group about the reference Z (and X for D), (M, 3, 3).

    T, O and I return only the identity: the angular search then covers all of SO(3).
    """
    kind, order = parse_symmetry(symmetry)
    if kind not in ("C", "D"):
        return np.eye(3)[None]
    cyclic = [rotation_z(360.0 * k / order) for k in range(order)]
    if kind == "D":
        cyclic += [rotation_x(180.0) @ r for r in cyclic]
    return np.stack(cyclic)
