"""Per-tilt geometry from the particles' displacements: shift, in-plane rotation, tilt-angle
offset, magnification and a smooth, regularised deformation of the field.

A tilt's geometry is RELION 5's alignment (geometry.projection) plus a deformation: a
displacement of the image field, a polynomial in the image position (u, v) = image Å / the
field's half size, of degrees 1 … ``order`` on each axis, coefficients in Å. A particle at X is
seen at ``P_t X + D_t(P_t X)``.

The fit is linear (Gauss–Newton): measured displacements d_p (Å) of the particles from where
the current geometry puts them, each with its information matrix A_p (the curvature of its
log-likelihood, shifts.window_peaks), are explained by parameter changes θ through the
Jacobian J_p of the particle's image position:

    min_θ Σ_p (d_p − J_p θ)ᵀ A_p (d_p − J_p θ) + Σ_k θ_k² / σ_k²

with Gaussian priors σ_k on each parameter (deformation coefficients most strongly). One
tilt-angle offset shared by all tilts is solved jointly with the per-tilt parameters (Schur
complement): a tilt-angle error is usually the same for the whole series, and per tilt it is
poorly determined near 0°.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tomoweave.geometry.projection import projection_matrix

ALIGNMENT_FIELDS = ("y_tilt_deg", "x_tilt_deg", "z_rot_deg", "shift_x_a", "shift_y_a",
                    "magnification")
# per-tilt parameters refined, with their default prior widths (units of the field)
PER_TILT_PRIORS = {"shift_x_a": 1e3, "shift_y_a": 1e3, "z_rot_deg": 1.0, "magnification": 0.02,
                   "y_tilt_deg": 0.5}
_STEPS = {"shift_x_a": 1.0, "shift_y_a": 1.0, "z_rot_deg": 0.01, "magnification": 1e-4,
          "y_tilt_deg": 0.01, "x_tilt_deg": 0.01}


def deformation_exponents(order: int) -> list[tuple[int, int]]:
    """Monomials u^a v^b of degree 1 … order (the constant is the shift)."""
    return [(a, degree - a) for degree in range(1, order + 1) for a in range(degree, -1, -1)]


@dataclass
class TiltGeometry:
    """Alignment of T tilts (arrays (T,), the fields of ALIGNMENT_FIELDS) and deformation.

    deformation_a : (T, 2, K) coefficients (x, y displacement) of the monomials of
        :func:`deformation_exponents` (``order``), Å; K = 0 without deformation.
    field_half_size_a : Å by which image positions are divided for the polynomial.
    """

    y_tilt_deg: np.ndarray
    x_tilt_deg: np.ndarray
    z_rot_deg: np.ndarray
    shift_x_a: np.ndarray
    shift_y_a: np.ndarray
    magnification: np.ndarray
    field_half_size_a: float = 1.0
    order: int = 0
    deformation_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 0)))

    def __post_init__(self) -> None:
        for name in ALIGNMENT_FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=float).copy())
        count = len(self.y_tilt_deg)
        k = len(deformation_exponents(self.order))
        if self.deformation_a.size == 0:
            self.deformation_a = np.zeros((count, 2, k))
        if self.deformation_a.shape != (count, 2, k):
            raise ValueError(f"deformation_a {self.deformation_a.shape}: expected "
                             f"({count}, 2, {k}) for order {self.order}")

    @classmethod
    def from_alignments(cls, alignments, field_half_size_a: float, order: int = 0
                        ) -> TiltGeometry:
        """From objects with the alignment fields (model.TiltAlignment, sim TruthTilt)."""
        values = {name: np.array([getattr(a, name, 1.0 if name == "magnification" else 0.0)
                                  for a in alignments]) for name in ALIGNMENT_FIELDS}
        return cls(**values, field_half_size_a=field_half_size_a, order=order)

    def __len__(self) -> int:
        return len(self.y_tilt_deg)

    def copy(self) -> TiltGeometry:
        return replace(self, **{n: getattr(self, n).copy() for n in ALIGNMENT_FIELDS},
                       deformation_a=self.deformation_a.copy())

    def matrix(self, t: int, changes: dict | None = None) -> np.ndarray:
        values = {n: float(getattr(self, n)[t]) for n in ALIGNMENT_FIELDS}
        for name, delta in (changes or {}).items():
            values[name] += delta
        return projection_matrix(values["y_tilt_deg"], values["x_tilt_deg"],
                                 values["z_rot_deg"], values["shift_x_a"], values["shift_y_a"],
                                 values["magnification"])

    def matrices(self) -> np.ndarray:
        """Projection matrices (T, 4, 4) of the rigid part."""
        return np.stack([self.matrix(t) for t in range(len(self))])

    def monomials(self, image_a: np.ndarray) -> np.ndarray:
        """(N, K) values of the deformation monomials at image points (N, 2) Å."""
        uv = np.asarray(image_a, dtype=float).reshape(-1, 2) / self.field_half_size_a
        if self.order == 0:
            return np.zeros((len(uv), 0))
        return np.stack([uv[:, 0] ** a * uv[:, 1] ** b
                         for a, b in deformation_exponents(self.order)], 1).reshape(len(uv), -1)

    def deformation_at(self, t: int, image_a: np.ndarray) -> np.ndarray:
        """Displacement (N, 2) Å of the field of tilt ``t`` at image points (N, 2) Å."""
        return self.monomials(image_a) @ self.deformation_a[t].T

    def project(self, positions_a: np.ndarray) -> np.ndarray:
        """Image positions (N, T, 2) Å of tomogram points (N, 3), deformation included."""
        points = np.asarray(positions_a, dtype=float).reshape(-1, 3)
        homogeneous = np.concatenate([points, np.ones((len(points), 1))], 1)
        out = np.empty((len(points), len(self), 2))
        for t in range(len(self)):
            rigid = (homogeneous @ self.matrix(t).T)[:, :2]
            out[:, t] = rigid + self.deformation_at(t, rigid)
        return out

    def offsets_a(self, positions_a: np.ndarray) -> np.ndarray:
        """The deformation part alone at each particle (N, T, 2) Å (what patch extraction
        adds to the rigid projection)."""
        points = np.asarray(positions_a, dtype=float).reshape(-1, 3)
        homogeneous = np.concatenate([points, np.ones((len(points), 1))], 1)
        out = np.empty((len(points), len(self), 2))
        for t in range(len(self)):
            out[:, t] = self.deformation_at(t, (homogeneous @ self.matrix(t).T)[:, :2])
        return out


def jacobian(geometry: TiltGeometry, t: int, positions_a: np.ndarray,
             names: tuple[str, ...]) -> np.ndarray:
    """∂(image position)/∂parameter (N, 2, P) of tilt ``t`` for the named alignment fields
    (central differences), followed by the deformation coefficients (x block, then y)."""
    points = np.asarray(positions_a, dtype=float).reshape(-1, 3)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], 1)
    columns = []
    for name in names:
        step = _STEPS[name]
        plus = (homogeneous @ geometry.matrix(t, {name: step}).T)[:, :2]
        minus = (homogeneous @ geometry.matrix(t, {name: -step}).T)[:, :2]
        columns.append((plus - minus) / (2 * step))
    monomials = geometry.monomials((homogeneous @ geometry.matrix(t).T)[:, :2])
    zeros = np.zeros_like(monomials)
    for axis in range(2):
        for k in range(monomials.shape[1]):
            column = np.stack([monomials[:, k], zeros[:, k]] if axis == 0 else
                              [zeros[:, k], monomials[:, k]], 1)
            columns.append(column)
    return np.stack(columns, -1) if columns else np.zeros((len(points), 2, 0))


@dataclass
class GeometryFit:
    """Changes applied by :func:`fit_geometry`: per tilt (T, P) in the order of ``names`` then
    the deformation coefficients, and the shared tilt-angle offset (°)."""

    names: tuple[str, ...]
    changes: np.ndarray
    tilt_offset_deg: float


def fit_geometry(geometry: TiltGeometry, positions_a: np.ndarray, displacements_a: np.ndarray,
                 information: np.ndarray, *, names: tuple[str, ...] = ("shift_x_a",
                 "shift_y_a", "z_rot_deg", "magnification"), shared_tilt_offset: bool = True,
                 priors: dict | None = None, deformation_sigma_a: float = 4.0
                 ) -> tuple[TiltGeometry, GeometryFit]:
    """The geometry that best explains measured displacements (one Gauss–Newton step).

    Parameters
    ----------
    geometry : TiltGeometry
        The geometry the displacements were measured against.
    positions_a : (N, 3)
        The particles, Å from the tomogram centre.
    displacements_a : (N, T, 2)
        Where each particle was found minus where ``geometry`` puts it, Å (x, y).
    information : (N, T, 2, 2)
        Inverse covariance of each displacement, Å⁻² (0: not measured).
    names : per-tilt alignment fields to refine (see PER_TILT_PRIORS).
    shared_tilt_offset : also solve one tilt-angle change common to all tilts.
    priors : {field: σ} overriding PER_TILT_PRIORS (units of the field).
    deformation_sigma_a : prior width of each deformation coefficient, Å.

    Returns
    -------
    The new geometry and the changes made.
    """
    sigma = {**PER_TILT_PRIORS, **(priors or {})}
    n_tilts = len(geometry)
    blocks = []
    for t in range(n_tilts):
        j = jacobian(geometry, t, positions_a, names)
        a = information[:, t]
        d = displacements_a[:, t]
        prior = np.array([sigma[n] for n in names]
                         + [deformation_sigma_a] * (j.shape[2] - len(names)))
        normal = np.einsum("nip,nij,njq->pq", j, a, j) + np.diag(1.0 / prior**2)
        right = np.einsum("nip,nij,nj->p", j, a, d)
        tilt_column = jacobian(geometry, t, positions_a, ("y_tilt_deg",))[:, :, 0]
        cross = np.einsum("nip,nij,nj->p", j, a, tilt_column)
        blocks.append((normal, right, cross, np.einsum("ni,nij,nj->", tilt_column, a,
                                                       tilt_column),
                       np.einsum("ni,nij,nj->", tilt_column, a, d)))
    offset = 0.0
    if shared_tilt_offset:
        lhs = 1.0 / sigma["y_tilt_deg"] ** 2 + sum(
            b[3] - b[2] @ np.linalg.solve(b[0], b[2]) for b in blocks)
        rhs = sum(b[4] - b[2] @ np.linalg.solve(b[0], b[1]) for b in blocks)
        offset = float(rhs / lhs)
    changes = np.stack([np.linalg.solve(b[0], b[1] - b[2] * offset) for b in blocks])
    updated = geometry.copy()
    for index, name in enumerate(names):
        getattr(updated, name)[:] += changes[:, index]
    updated.y_tilt_deg[:] += offset
    k = updated.deformation_a.shape[2]
    if k:
        updated.deformation_a += changes[:, len(names):].reshape(n_tilts, 2, k)
    return updated, GeometryFit(tuple(names), changes, offset)
