"""Least-squares solver of the tilt-series projection model from tracked 2D points.

The model is exactly ``tomoweave.geometry.projection_matrix``: a point ``X`` (pixels from the
tomogram centre, x y z) lands in tilt ``i`` at

    u_i = m_i * [Rz(z_rot_i) @ Ry(y_tilt_i) @ Rx(x_tilt) @ X]_xy + s_i      (pixels from N // 2)

Unknowns: the 3D points, per-tilt shifts ``s_i``, the in-plane rotation (one global angle or one
per tilt), per-tilt magnification ``m_i`` (the reference tilt keeps 1). Some directions are not
determined by the data (gauge freedoms) and are fixed after the fit:

- a 3D translation of all points (absorbed by the shifts): the points' mean z is set to 0 and the
  in-plane part is chosen so that the shifts are as small as possible;
- a rotation of all points about Y (or X) is the same as an offset of every tilt angle (or an
  x_tilt): the points are rotated so that they lie flat (a slab parallel to XY) and the rotation
  is moved into the tilt angles. That is how the tilt-angle offset is measured.

Outliers (mis-tracked observations, then whole points) are rejected iteratively on residuals
beyond a multiple of a robust (median-based) scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.sparse import coo_matrix

from tomoweave.geometry.rotations import rotation_x, rotation_y, rotation_z

# median of the norm of a 2D isotropic Gaussian error is sigma * sqrt(2 ln 2)
_RAYLEIGH_MEDIAN = float(np.sqrt(2.0 * np.log(2.0)))


@dataclass
class AlignmentSolution:
    """Result of :func:`solve_alignment`; lengths in pixels of the input coordinates."""

    y_tilt_deg: np.ndarray  # (T,) tilt angle of each tilt (nominal + offset)
    x_tilt_deg: float
    z_rot_deg: np.ndarray  # (T,)
    shifts_px: np.ndarray  # (T, 2) x, y: where the tomogram centre lands, px from N // 2
    magnification: np.ndarray  # (T,)
    points_px: np.ndarray  # (P, 3) 3D points, px from the tomogram centre (NaN if rejected)
    kept_points: np.ndarray  # (P,) bool
    kept_observations: np.ndarray  # (P, T) bool
    residuals_px: np.ndarray  # (P, T, 2) observed minus model (NaN where not observed)
    tilt_residual_px: np.ndarray  # (T,) mean residual norm per tilt (NaN if no observation)
    mean_residual_px: float
    tilt_offset_deg: float
    z_rot_sigma_deg: float = float("nan")  # standard error of a global z_rot
    rejected_observations: int = 0
    rejected_points: int = 0
    log: list[str] = field(default_factory=list)

    def matrices(self) -> np.ndarray:
        """Projection matrices (T, 2, 4) in pixels, the same model as geometry.projection_matrix."""
        rows = []
        for i in range(len(self.y_tilt_deg)):
            rotation = _rotation(self.z_rot_deg[i], self.y_tilt_deg[i], self.x_tilt_deg)
            matrix = np.zeros((2, 4))
            matrix[:, :3] = self.magnification[i] * rotation[:2]
            matrix[:, 3] = self.shifts_px[i]
            rows.append(matrix)
        return np.stack(rows)


def _rotation(z_rot_deg: float, y_tilt_deg: float, x_tilt_deg: float) -> np.ndarray:
    return rotation_z(z_rot_deg) @ rotation_y(y_tilt_deg) @ rotation_x(x_tilt_deg)


class _Layout:
    """Where each unknown sits in the parameter vector."""

    def __init__(self, n_points: int, n_tilts: int, z_rot_mode: str, solve_mag: bool, ref: int):
        self.n_points, self.n_tilts, self.ref = n_points, n_tilts, ref
        self.points = slice(0, 3 * n_points)
        start = 3 * n_points
        self.shifts = slice(start, start + 2 * n_tilts)
        start += 2 * n_tilts
        n_rot = {"global": 1, "per_tilt": n_tilts, "fixed": 0}[z_rot_mode]
        self.rot = slice(start, start + n_rot)
        start += n_rot
        self.mag_tilts = np.array([i for i in range(n_tilts) if i != ref]) if solve_mag else []
        self.mag = slice(start, start + len(self.mag_tilts))
        self.size = start + len(self.mag_tilts)
        self.z_rot_mode = z_rot_mode

    def unpack(self, params: np.ndarray, z_rot0: np.ndarray):
        points = params[self.points].reshape(-1, 3)
        shifts = params[self.shifts].reshape(-1, 2)
        z_rot = z_rot0.copy()
        if self.z_rot_mode == "global":
            z_rot = z_rot0 + params[self.rot][0]
        elif self.z_rot_mode == "per_tilt":
            z_rot = z_rot0 + params[self.rot]
        log_mag = np.zeros(self.n_tilts)
        if len(self.mag_tilts):
            log_mag[self.mag_tilts] = params[self.mag]
        return points, shifts, z_rot, log_mag


def _model(points, shifts, z_rot_deg, y_tilt_deg, x_tilt_deg, log_mag, point_idx, tilt_idx):
    """Predicted 2D positions of observations and the pieces the Jacobian needs."""
    c, s = np.cos(np.radians(z_rot_deg)), np.sin(np.radians(z_rot_deg))
    tilted = np.stack(
        [rotation_y(t) @ rotation_x(x_tilt_deg) for t in y_tilt_deg]
    )  # (T, 3, 3)
    q = np.einsum("tij,tj->ti", tilted[tilt_idx], points[point_idx])  # specimen after tilt
    qx, qy = q[:, 0], q[:, 1]
    ct, st = c[tilt_idx], s[tilt_idx]
    mag = np.exp(log_mag[tilt_idx])
    rotated = np.stack([ct * qx - st * qy, st * qx + ct * qy], axis=1)
    predicted = mag[:, None] * rotated + shifts[tilt_idx]
    return predicted, tilted, rotated, mag


def _residual_and_jacobian(params, layout, z_rot0, y_tilt, x_tilt, point_idx, tilt_idx, observed):
    points, shifts, z_rot, log_mag = layout.unpack(params, z_rot0)
    predicted, tilted, rotated, mag = _model(
        points, shifts, z_rot, y_tilt, x_tilt, log_mag, point_idx, tilt_idx
    )
    residual = (predicted - observed).ravel()
    n_obs = len(point_idx)
    rows, cols, vals = [], [], []

    def put(row, col, val):
        rows.append(row)
        cols.append(np.broadcast_to(col, np.shape(row)))
        vals.append(val)

    obs_rows = np.arange(n_obs) * 2
    c, s = np.cos(np.radians(z_rot)), np.sin(np.radians(z_rot))
    rz = np.zeros((layout.n_tilts, 2, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1] = c, -s, s, c
    d_point = mag[:, None, None] * np.einsum("tij,tjk->tik", rz, tilted)[tilt_idx]  # (n, 2, 3)
    # d/d z_rot (per degree): the derivative of an in-plane rotation of (x', y') is (-y', x')
    d_rot = mag[:, None] * np.stack([-rotated[:, 1], rotated[:, 0]], axis=1) * np.pi / 180.0
    mag_column = np.full(layout.n_tilts, -1)
    if len(layout.mag_tilts):
        mag_column[layout.mag_tilts] = layout.mag.start + np.arange(len(layout.mag_tilts))
    has_mag = mag_column[tilt_idx] >= 0
    for axis in range(2):
        row = obs_rows + axis
        for k in range(3):
            put(row, 3 * point_idx + k, d_point[:, axis, k])
        put(row, layout.shifts.start + 2 * tilt_idx + axis, np.ones(n_obs))
        if layout.z_rot_mode == "global":
            put(row, layout.rot.start, d_rot[:, axis])
        elif layout.z_rot_mode == "per_tilt":
            put(row, layout.rot.start + tilt_idx, d_rot[:, axis])
        put(row[has_mag], mag_column[tilt_idx][has_mag], mag[has_mag] * rotated[has_mag, axis])
    jac = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(2 * n_obs, layout.size),
    ).tocsr()
    return residual, jac


def linear_points_and_shifts(
    observations_px: np.ndarray, matrices_2x3: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """3D points and per-tilt shifts by linear least squares for fixed rotations.

    Parameters
    ----------
    observations_px : array (P, T, 2)
        Observed positions, px from the image centre; NaN where a point was not seen.
    matrices_2x3 : array (T, 2, 3)
        Scaled rotation rows of each tilt (``m_i * R_i[:2]``).

    Returns
    -------
    points_px (P, 3) and shifts_px (T, 2); the minimum-norm solution of the gauge freedoms.
    """
    from scipy.sparse.linalg import lsqr

    n_points, n_tilts = observations_px.shape[:2]
    point_idx, tilt_idx = np.nonzero(np.isfinite(observations_px[..., 0]))
    n_obs = len(point_idx)
    rows, cols, vals = [], [], []
    for axis in range(2):
        r = 2 * np.arange(n_obs) + axis
        for k in range(3):
            rows.append(r)
            cols.append(3 * point_idx + k)
            vals.append(matrices_2x3[tilt_idx, axis, k])
        rows.append(r)
        cols.append(3 * n_points + 2 * tilt_idx + axis)
        vals.append(np.ones(n_obs))
    matrix = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(2 * n_obs, 3 * n_points + 2 * n_tilts),
    ).tocsr()
    rhs = observations_px[point_idx, tilt_idx].ravel()
    solution = lsqr(matrix, rhs, damp=1e-6, atol=1e-10, btol=1e-10, iter_lim=5000)[0]
    return solution[: 3 * n_points].reshape(-1, 3), solution[3 * n_points :].reshape(-1, 2)


def nominal_matrices(tilts_deg: np.ndarray, z_rot_deg: np.ndarray | float) -> np.ndarray:
    """(T, 2, 3) rotation rows of the nominal geometry (no x tilt, magnification 1)."""
    z_rot = np.broadcast_to(np.asarray(z_rot_deg, dtype=float), np.shape(tilts_deg))
    return np.stack([_rotation(z, t, 0.0)[:2] for z, t in zip(z_rot, tilts_deg, strict=True)])


def _robust_threshold(values: np.ndarray, k: float, rayleigh: bool) -> float:
    median = float(np.median(values))
    if rayleigh:  # norms of 2D errors: sigma from the median of a Rayleigh distribution
        return k * median / _RAYLEIGH_MEDIAN
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    return max(median + k * mad, 1.5 * median)


def flatten_points(points: np.ndarray, log: list[str]) -> tuple[float, float, int]:
    """Tilt-angle offset, x tilt (degrees) and layer count that make points lie flat in XY.

    Points on the two surfaces of a section form two parallel layers: fit one plane slope with
    one height per layer. Layers are split at the largest gap of heights, first of z itself (the
    solver's frame is already near flat, as nominal tilts are near the truth), then above the plane.
    """
    if len(points) < 4:
        log.append("flatten: fewer than 4 points, tilt offset not measured")
        return 0.0, 0.0, 0
    centred = points - points.mean(axis=0)
    spread_xy = np.sqrt(np.clip(np.linalg.eigvalsh(np.cov(centred[:, :2].T)), 0, None))
    if spread_xy.min() < 1e-6:
        log.append("flatten: points are collinear, tilt offset not measured")
        return 0.0, 0.0, 0
    height = centred[:, 2]
    for _ in range(3):
        layer = _split_layers(height)
        design = np.column_stack(
            [centred[:, 0], centred[:, 1]] + [layer == k for k in np.unique(layer)]
        ).astype(float)
        coeff = np.linalg.lstsq(design, centred[:, 2], rcond=None)[0]
        height = centred[:, 2] - coeff[0] * centred[:, 0] - coeff[1] * centred[:, 1]
    normal = np.array([-coeff[0], -coeff[1], 1.0])
    normal /= np.linalg.norm(normal)
    offset_deg = float(np.degrees(np.arctan2(normal[0], normal[2])))
    x_tilt_deg = float(np.degrees(np.arcsin(-normal[1])))
    layers = len(np.unique(layer))
    log.append(f"flatten: {layers} layer(s), offset {offset_deg:.3f}°, x tilt {x_tilt_deg:.3f}°")
    return offset_deg, x_tilt_deg, layers


def _split_layers(height: np.ndarray) -> np.ndarray:
    """0/1 layer labels split at the largest height gap, or all 0 when there is no clear gap."""
    order = np.sort(height)
    if len(order) < 6:
        return np.zeros(len(height), dtype=int)
    gaps = np.diff(order)
    cut = int(np.argmax(gaps))
    low, high = order[: cut + 1], order[cut + 1 :]
    if min(len(low), len(high)) < 3 or gaps[cut] < 2.0 * (low.std() + high.std()):
        return np.zeros(len(height), dtype=int)
    return (height > order[cut]).astype(int)


@dataclass
class _Fit:
    points: np.ndarray
    shifts: np.ndarray
    z_rot: np.ndarray
    log_mag: np.ndarray
    z_rot_sigma_deg: float = float("nan")


def _fit(observations, keep, tilts_deg, z_rot0, z_rot_mode, solve_mag, ref, start):
    n_points, n_tilts = observations.shape[:2]
    layout = _Layout(n_points, n_tilts, z_rot_mode, solve_mag, ref)
    point_idx, tilt_idx = np.nonzero(keep)
    observed = observations[point_idx, tilt_idx]
    x0 = np.zeros(layout.size)
    x0[layout.points] = start.points.ravel()
    x0[layout.shifts] = start.shifts.ravel()
    if z_rot_mode == "global":
        x0[layout.rot] = np.mean(start.z_rot - z_rot0)
    elif z_rot_mode == "per_tilt":
        x0[layout.rot] = start.z_rot - z_rot0
    if solve_mag:
        x0[layout.mag] = start.log_mag[layout.mag_tilts]
    args = (layout, z_rot0, tilts_deg, 0.0, point_idx, tilt_idx, observed)
    solution = _levenberg_marquardt(lambda p: _residual_and_jacobian(p, *args), x0)
    points, shifts, z_rot, log_mag = layout.unpack(solution, z_rot0)
    sigma = float("nan")
    if z_rot_mode == "global":
        sigma = _parameter_sigma(_residual_and_jacobian(solution, *args), layout.rot.start)
    return _Fit(points.copy(), shifts.copy(), z_rot, log_mag, sigma)


def _parameter_sigma(residual_and_jacobian, index: int) -> float:
    """Standard error of one parameter from the Gauss-Newton covariance (pseudo-inverse, as
    gauge directions make the normal matrix singular)."""
    residual, jac = residual_and_jacobian
    normal = (jac.T @ jac).toarray()
    dof = max(1, len(residual) - np.linalg.matrix_rank(normal))
    variance = float(residual @ residual) / dof
    return float(np.sqrt(max(np.linalg.pinv(normal, hermitian=True)[index, index], 0) * variance))


def _levenberg_marquardt(function, x0: np.ndarray, max_iterations: int = 100) -> np.ndarray:
    """Damped Gauss-Newton on the normal equations; the damping also pins gauge directions."""
    x = x0.copy()
    residual, jac = function(x)
    cost = float(residual @ residual)
    damping = 1e-3
    for _ in range(max_iterations):
        normal = (jac.T @ jac).toarray()
        gradient = jac.T @ residual
        diagonal = np.diag(normal).copy() + 1e-9 * max(np.diag(normal).max(), 1.0)
        while True:
            step = -np.linalg.solve(normal + damping * np.diag(diagonal), gradient)
            trial_residual, trial_jac = function(x + step)
            trial_cost = float(trial_residual @ trial_residual)
            if trial_cost <= cost:
                break
            damping *= 4.0
            if damping > 1e12:
                return x
        x = x + step
        decrease = cost - trial_cost
        residual, jac, cost = trial_residual, trial_jac, trial_cost
        damping = max(damping / 3.0, 1e-9)
        if decrease <= 1e-12 * max(cost, 1e-12) or np.abs(step).max() < 1e-9:
            break
    return x


def _residuals(observations, fit: _Fit, tilts_deg, x_tilt_deg) -> np.ndarray:
    n_points, n_tilts = observations.shape[:2]
    point_idx, tilt_idx = np.meshgrid(np.arange(n_points), np.arange(n_tilts), indexing="ij")
    predicted, *_ = _model(
        fit.points, fit.shifts, fit.z_rot, tilts_deg, x_tilt_deg, fit.log_mag,
        point_idx.ravel(), tilt_idx.ravel(),
    )
    return observations - predicted.reshape(n_points, n_tilts, 2)


def solve_alignment(
    observations_px: np.ndarray,
    tilts_deg: np.ndarray,
    z_rot_deg: float | np.ndarray,
    z_rot_mode: str = "global",
    solve_magnification: bool = True,
    solve_tilt_offset: bool = True,
    outlier_k: float = 4.0,
    max_rounds: int = 6,
    min_observations_per_point: int = 3,
) -> AlignmentSolution:
    """Fit the projection model to tracked points, rejecting outliers.

    Parameters
    ----------
    observations_px : array (P, T, 2)
        Positions (x, y) of P tracked points in T tilts, px from the image centre (index N // 2);
        NaN where a point was not found.
    tilts_deg : array (T,)
        Nominal tilt angles (y_tilt), degrees.
    z_rot_deg : float or array (T,)
        Starting in-plane rotation (the nominal tilt-axis angle), degrees.
    z_rot_mode : {"global", "per_tilt", "fixed"}
        Solve one in-plane rotation for the series, one per tilt, or keep the start.
    solve_magnification : bool
        Solve one magnification per tilt (the tilt nearest 0° keeps 1).
    solve_tilt_offset : bool
        Rotate the points flat and move that rotation into the tilt angles (offset) and x_tilt.
    outlier_k : float
        Observations whose residual exceeds ``outlier_k`` robust sigmas, and points whose RMS
        residual exceeds median + ``outlier_k`` MAD, are dropped and the model refitted.
    """
    observations = np.asarray(observations_px, dtype=float)
    tilts = np.asarray(tilts_deg, dtype=float)
    if observations.ndim != 3 or observations.shape[2] != 2:
        raise ValueError(f"observations_px must have shape (P, T, 2), got {observations.shape}")
    n_points, n_tilts = observations.shape[:2]
    if tilts.shape != (n_tilts,):
        raise ValueError(f"tilts_deg must have {n_tilts} values, got shape {tilts.shape}")
    if z_rot_mode not in ("global", "per_tilt", "fixed"):
        raise ValueError(f"z_rot_mode must be global, per_tilt or fixed, got {z_rot_mode!r}")
    if n_tilts < 3:
        raise ValueError(f"alignment needs at least 3 tilts, got {n_tilts}")
    z_rot0 = np.broadcast_to(np.asarray(z_rot_deg, dtype=float), (n_tilts,)).copy()
    keep = np.isfinite(observations).all(axis=2)
    keep &= keep.sum(axis=1, keepdims=True) >= min_observations_per_point
    _check_coverage(keep, tilts, z_rot_mode, solve_magnification)
    ref = int(np.argmin(np.abs(tilts)))
    log: list[str] = []
    points, shifts = linear_points_and_shifts(
        np.where(keep[..., None], observations, np.nan), nominal_matrices(tilts, z_rot0)
    )
    fit = _Fit(points, shifts, z_rot0.copy(), np.zeros(n_tilts))
    kept_points = keep.any(axis=1)
    initial_obs = int(keep.sum())
    for round_index in range(max_rounds):
        fit = _fit(observations, keep, tilts, z_rot0, z_rot_mode, solve_magnification, ref, fit)
        residual = _residuals(observations, fit, tilts, 0.0)
        norms = np.linalg.norm(residual, axis=2)
        threshold = _robust_threshold(norms[keep], outlier_k, rayleigh=True)
        bad_obs = keep & (norms > threshold)
        # whole points are judged only once their single bad observations are gone
        point_rms = np.sqrt(np.sum(np.where(keep, norms**2, 0.0), axis=1) / keep.sum(1).clip(1))
        valid = kept_points & ~bad_obs.any(axis=1)
        bad_points = np.zeros(n_points, dtype=bool)
        if not bad_obs.any() and valid.sum() >= 4:
            point_threshold = _robust_threshold(point_rms[valid], outlier_k, rayleigh=False)
            bad_points = valid & (point_rms > point_threshold)
        if not bad_obs.any() and not bad_points.any():
            break
        trial = keep & ~bad_obs
        trial[bad_points] = False
        trial &= trial.sum(axis=1, keepdims=True) >= min_observations_per_point
        try:
            _check_coverage(trial, tilts, z_rot_mode, solve_magnification)
        except ValueError:
            log.append(f"round {round_index}: rejection would leave a tilt unsolvable, stopped")
            break
        log.append(
            f"round {round_index}: threshold {threshold:.2f} px, dropped {int(bad_obs.sum())} "
            f"observations and {int(bad_points.sum())} points"
        )
        keep = trial
        kept_points = keep.any(axis=1)
    return _finish(observations, keep, fit, tilts, solve_tilt_offset, initial_obs, log)


def _check_coverage(keep, tilts, z_rot_mode, solve_mag) -> None:
    needed = 2 + (z_rot_mode == "per_tilt") + bool(solve_mag)
    needed = max(2, int(np.ceil(needed / 2)) + 1)
    counts = keep.sum(axis=0)
    poor = np.nonzero(counts < needed)[0]
    if len(poor):
        angles = ", ".join(f"{tilts[i]:.1f}°" for i in poor)
        raise ValueError(
            f"tilts {angles} have fewer than {needed} tracked points; exclude them or track more"
        )


def _finish(observations, keep, fit: _Fit, tilts, solve_tilt_offset, initial_obs, log):
    kept_points = keep.any(axis=1)
    residual = _residuals(observations, fit, tilts, 0.0)
    residual[~keep] = np.nan
    norms = np.linalg.norm(residual, axis=2)
    with np.errstate(invalid="ignore"):
        tilt_residual = np.nanmean(np.where(keep, norms, np.nan), axis=0)
    points = fit.points.copy()
    points[~kept_points] = np.nan
    solution = AlignmentSolution(
        y_tilt_deg=np.asarray(tilts, dtype=float).copy(),
        x_tilt_deg=0.0,
        z_rot_deg=np.asarray(fit.z_rot, dtype=float),
        shifts_px=fit.shifts.copy(),
        magnification=np.exp(fit.log_mag),
        points_px=points,
        kept_points=kept_points,
        kept_observations=keep,
        residuals_px=residual,
        tilt_residual_px=tilt_residual,
        mean_residual_px=float(norms[keep].mean()) if keep.any() else float("nan"),
        tilt_offset_deg=0.0,
        z_rot_sigma_deg=fit.z_rot_sigma_deg,
        rejected_observations=initial_obs - int(keep.sum()),
        rejected_points=int((np.isfinite(observations[..., 0]).sum(axis=1) > 0).sum())
        - int(kept_points.sum()),
        log=log,
    )
    offset_deg, x_tilt_deg = 0.0, 0.0
    if solve_tilt_offset:
        offset_deg, x_tilt_deg, _ = flatten_points(points[kept_points], log)
    return set_tilt_offset(solution, offset_deg, x_tilt_deg)


def set_tilt_offset(
    solution: AlignmentSolution, offset_deg: float, x_tilt_deg: float = 0.0
) -> AlignmentSolution:
    """The same fit with the tilt-angle offset (and x tilt) set; projections do not change.

    Turning all points by ``Rx(-x_tilt) @ Ry(-offset)`` and adding the offset to every tilt
    angle is an exact reparametrisation; afterwards the translation gauge is fixed again (mean
    point height 0, smallest shifts). Applies to a solution without offset and x tilt.
    """
    if solution.tilt_offset_deg != 0.0 or solution.x_tilt_deg != 0.0:
        raise ValueError("set_tilt_offset needs a solution without tilt offset and x tilt")
    turn = rotation_x(-x_tilt_deg) @ rotation_y(-offset_deg)
    kept = solution.kept_points
    points = solution.points_px @ turn.T
    y_tilt = solution.y_tilt_deg + offset_deg
    rotations = np.stack(
        [_rotation(z, t, x_tilt_deg) for z, t in zip(solution.z_rot_deg, y_tilt, strict=True)]
    )
    scaled = solution.magnification[:, None, None] * rotations[:, :2, :]  # (T, 2, 3)
    translation = _gauge_translation(points[kept], solution.shifts_px, scaled)
    return replace(
        solution,
        y_tilt_deg=y_tilt,
        x_tilt_deg=float(x_tilt_deg),
        tilt_offset_deg=float(offset_deg),
        points_px=points - translation,
        shifts_px=solution.shifts_px + scaled @ translation,
    )


def _gauge_translation(points: np.ndarray, shifts: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """Translation t of the points fixing the gauge: mean point height 0, smallest shifts.

    Moving the points by -t and the shifts by +scaled @ t leaves every projection unchanged.
    """
    t_z = float(points[:, 2].mean()) if len(points) else 0.0
    # minimise sum_i |shifts_i + scaled_i @ (t_x, t_y, t_z)|^2 over t_x, t_y
    design = scaled[:, :, :2].reshape(-1, 2)
    target = -(shifts + scaled[:, :, 2] * t_z).reshape(-1)
    t_xy = np.linalg.lstsq(design, target, rcond=None)[0]
    return np.array([t_xy[0], t_xy[1], t_z])


def translation_free_rms(
    shifts_px: np.ndarray, reference_px: np.ndarray, scaled_rotations: np.ndarray
) -> tuple[float, np.ndarray]:
    """RMS distance of two shift sets after removing the best global 3D specimen translation.

    Shifts are only defined up to a translation t of the specimen, which changes the shift of
    tilt i by ``scaled_rotations[i] @ t``; this removes the t that best explains the difference.

    Parameters
    ----------
    shifts_px, reference_px : arrays (T, 2)
    scaled_rotations : array (T, 2, 3)
        ``m_i * R_i[:2]`` of the reference geometry.

    Returns
    -------
    rms_px : float and the translation t (3,) removed.
    """
    difference = (np.asarray(shifts_px) - np.asarray(reference_px)).reshape(-1)
    design = np.asarray(scaled_rotations).reshape(-1, 3)
    translation = np.linalg.lstsq(design, difference, rcond=None)[0]
    remaining = (difference - design @ translation).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(remaining**2, axis=1)))), translation
