"""Per-particle, per-tilt motion with a spatial smoothness prior (RELION's tomographic frame
alignment idea, Gaussian-process form).

After the per-tilt geometry, what remains of each particle's displacement d_p in a tilt is its
own motion (beam-induced, local doming) plus measurement noise (information A_p,
shifts.window_peaks). Neighbours move together: the motions of a tilt are a priori a Gaussian
field over the particles' positions with covariance

    K_pq = σ² exp(−|x_p − x_q|² / (2 ℓ²))   (per axis, x and y independent)

and the posterior mean, the estimate, is m = (A + K⁻¹)⁻¹ A d = K (A K + I)⁻¹ A d. A particle
measured poorly borrows its neighbours' motion; an isolated one falls back towards 0.
"""

from __future__ import annotations

import numpy as np


def smooth_motion(positions_a: np.ndarray, displacements_a: np.ndarray,
                  information: np.ndarray, *, sigma_a: float = 4.0,
                  length_a: float = 300.0) -> np.ndarray:
    """Posterior-mean motion of every particle in every tilt.

    Parameters
    ----------
    positions_a : (N, 3) or (N, 2)
        Where the particles are (Å); distances use x and y (the field).
    displacements_a : (N, T, 2)
        Measured displacements from the refined geometry's prediction, Å.
    information : (N, T, 2, 2)
        Their inverse covariances, Å⁻².
    sigma_a : float
        Prior RMS of a particle's motion per axis, Å.
    length_a : float
        Correlation length of the motion over the field, Å.

    Returns
    -------
    (N, T, 2) motion, Å.
    """
    points = np.asarray(positions_a, dtype=float)[:, :2]
    count, n_tilts, _ = displacements_a.shape
    distance2 = np.sum((points[:, None] - points[None]) ** 2, axis=-1)
    kernel = sigma_a**2 * np.exp(-distance2 / (2 * length_a**2))
    covariance = np.kron(kernel, np.eye(2))  # (2N, 2N), index 2p + axis
    out = np.empty_like(np.asarray(displacements_a, dtype=float))
    for t in range(n_tilts):
        blocks = np.zeros((2 * count, 2 * count))
        for p in range(count):
            blocks[2 * p:2 * p + 2, 2 * p:2 * p + 2] = information[p, t]
        data = displacements_a[:, t].reshape(-1)
        system = blocks @ covariance + np.eye(2 * count)
        out[:, t] = (covariance @ np.linalg.solve(system, blocks @ data)).reshape(count, 2)
    return out
