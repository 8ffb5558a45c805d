"""Clustering of particle coordinates (e.g. principal components): k-means and Gaussian mixtures.

Both are plain EM loops over (N, D) float arrays with several seeded starts; the best start
(least within-cluster sum of squares, or highest log-likelihood) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Clusters:
    """labels (N,), centres (K, D), responsibilities (N, K) (one-hot for k-means), score:
    within-cluster sum of squares (k-means) or log-likelihood (mixture)."""

    labels: np.ndarray
    centres: np.ndarray
    responsibilities: np.ndarray
    score: float
    covariances: np.ndarray | None = None


def kmeans(points: np.ndarray, k: int, *, starts: int = 8, max_iterations: int = 100,
           seed: int = 0) -> Clusters:
    """k-means (Lloyd) with k-means++ starts.

    Parameters
    ----------
    points : (N, D) float
    k : int, number of clusters (≤ N)
    starts : int, independent k-means++ starts; the one with the least sum of squares wins
    max_iterations : int, per start
    seed : int
    """
    x = _checked(points, k)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(starts):
        centres = _plus_plus(x, k, rng)
        for _ in range(max_iterations):
            labels = np.argmin(_distances(x, centres), axis=1)
            moved = np.stack([x[labels == j].mean(axis=0) if np.any(labels == j)
                              else centres[j] for j in range(k)])
            if np.allclose(moved, centres):
                break
            centres = moved
        labels = np.argmin(_distances(x, centres), axis=1)
        inertia = float(np.sum((x - centres[labels]) ** 2))
        if best is None or inertia < best.score:
            best = Clusters(labels, centres, np.eye(k)[labels], inertia)
    return best


def gaussian_mixture(points: np.ndarray, k: int, *, starts: int = 4, max_iterations: int = 200,
                     regularisation: float = 1e-6, seed: int = 0) -> Clusters:
    """Gaussian mixture with full covariances fitted by EM, started from k-means.

    ``regularisation`` × the data's variance is added to every covariance's diagonal.
    """
    x = _checked(points, k)
    n, d = x.shape
    floor = regularisation * max(float(np.var(x)), 1e-30) * np.eye(d)
    best = None
    for start in range(starts):
        seeds = kmeans(x, k, starts=1, seed=seed + start)
        weights = seeds.responsibilities
        previous = -np.inf
        for _ in range(max_iterations):
            fractions, means, covariances = _m_step(x, weights, floor)
            log_density = _log_gaussians(x, means, covariances) + np.log(fractions)[None]
            peak = log_density.max(axis=1, keepdims=True)
            total = peak[:, 0] + np.log(np.exp(log_density - peak).sum(axis=1))
            weights = np.exp(log_density - total[:, None])
            likelihood = float(total.sum())
            if likelihood - previous < 1e-8 * abs(likelihood):
                break
            previous = likelihood
        if best is None or likelihood > best.score:
            best = Clusters(np.argmax(weights, axis=1), means, weights, likelihood, covariances)
    return best


def _checked(points: np.ndarray, k: int) -> np.ndarray:
    x = np.asarray(points, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"points {x.shape}: expected (N, D) with N ≥ k = {k}")
    return x


def _distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        nearest = _distances(x, np.array(centres)).min(axis=1)
        total = nearest.sum()
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
    return np.array(centres)


def _m_step(x: np.ndarray, weights: np.ndarray, floor: np.ndarray):
    totals = np.maximum(weights.sum(axis=0), 1e-12)
    fractions = totals / totals.sum()
    means = (weights.T @ x) / totals[:, None]
    covariances = np.stack([
        ((weights[:, j, None] * (x - means[j])).T @ (x - means[j])) / totals[j] + floor
        for j in range(weights.shape[1])])
    return fractions, means, covariances


def _log_gaussians(x: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    out = np.empty((len(x), len(means)))
    for j, (mean, covariance) in enumerate(zip(means, covariances, strict=True)):
        factor = np.linalg.cholesky(covariance)
        solved = np.linalg.solve(factor, (x - mean).T)
        log_det = 2.0 * np.sum(np.log(np.diag(factor)))
        out[:, j] = -0.5 * (np.sum(solved**2, axis=0) + log_det + d * np.log(2 * np.pi))
    return out
