"""Missing-wedge-compensated principal component analysis of aligned particles.

Each particle's premultiplied spectrum D_i and CTF² weight W_i are turned into the reference
frame at its pose (trilinear splatting, averaging's gridding), giving per voxel k of the
reference-frame half grid the sums N_i(k) = Σ R_i(D_i) and M_i(k) = Σ R_i(W_i). Where the
particle has information (M_i above a fraction of its mean) its CTF-corrected estimate is
N_i / M_i; elsewhere it has none. The difference to the average A = Σ N_i / Σ M_i,

    Δ_i(k) = m_i(k) · (N_i(k) / M_i(k) − A(k)),       m_i = 1 where particle i sampled k,

is therefore computed only where the particle and the reference both have information. The
particle-by-particle covariance is taken over the voxels both particles sampled and scaled to
the whole sphere (the constrained correlation idea of Förster et al. 2008, Heumann et al. 2011):

    C_ij = Σ_k w_k Re(Δ_i Δ_j*) · Σ_k w_k / Σ_k w_k m_i m_j,     w_k: full-spectrum multiplicity

Its leading eigenvectors give each particle's coordinates on the components (u_i √λ); an
eigenvolume is the per-voxel least-squares fit Σ_i u_i Δ_i / Σ_i u_i² m_i. Averages of the
particles binned along a component trace the motion it describes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging import gridding, sources
from tomoweave.algorithms.averaging.reconstruction import Reconstructor, hermitian_sum

INFORMATION_FRACTION = 0.2  # a voxel counts as sampled where M_i exceeds this × its mean


@dataclass
class ComponentAnalysis:
    """Result of :func:`principal_components`.

    coordinates : (N, C) each particle on the components (u √λ)
    eigenvalues : (C,) of the constrained covariance
    eigenvolumes : (C, b, b, b) real-space eigenvolumes at the working box ``box_px``
    pixel_size_a : pixel of the eigenvolumes
    explained : (C,) fraction of the positive eigenvalues' sum
    """

    coordinates: np.ndarray
    eigenvalues: np.ndarray
    eigenvolumes: np.ndarray
    box_px: int
    pixel_size_a: float
    explained: np.ndarray


def reference_frame_spectra(source: sources.ImageSource, rotations: np.ndarray,
                            shifts_a: np.ndarray, *, resolution_a: float,
                            batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every particle's data and weight in the reference frame, at a box that holds
    ``resolution_a``: ``values`` (N, n) complex64 = N_i / M_i where sampled, else 0;
    ``sampled`` (N, n) bool; ``numerator`` and ``weight`` sums (n,) over all particles;
    ``flat``, ``k``, ``multiplicity`` of the n half-grid voxels; ``box_px``, ``pixel_size_a``.
    """
    box, pixel = source.box_px, source.pixel_size_a
    radius = box * pixel / max(resolution_a, 2.0 * pixel)
    work = int(min(box, 2 * np.ceil(radius + 2) + 2))
    work += work % 2
    radius = min(radius, work // 2 - 1)
    voxels = gridding.half_grid_voxels(work, radius)
    flat, k = voxels["flat"], voxels["k"]
    centre = np.array([work // 2] * 3)
    index = tuple((np.rint(k[:, ::-1]).astype(int) + centre).T)  # (z, y, x) on the grid
    centring = np.exp(2j * np.pi * (k @ centre.astype(np.float32)) / work)
    values = np.zeros((source.count, len(flat)), np.complex64)
    sampled = np.zeros((source.count, len(flat)), bool)
    totals = [np.zeros(len(flat), np.complex128), np.zeros(len(flat))]
    pixel_work = pixel * box / work
    for batch in sources.batches(np.arange(source.count), batch_size):
        data, weight = source.batch(batch, work)
        for row, i in enumerate(batch):
            numerator, denominator = _turned(data[row].ravel()[flat], weight[row].ravel()[flat],
                                             k, rotations[i], shifts_a[i] / pixel_work,
                                             centring, work, voxels["multiplicity"])
            num, den = numerator[index], denominator[index]
            informed = den > INFORMATION_FRACTION * max(float(den[den > 0].mean()), 1e-30) \
                if np.any(den > 0) else np.zeros(len(den), bool)
            values[i] = np.where(informed, num / np.where(informed, den, 1.0), 0.0)
            sampled[i] = informed
            totals[0] += num
            totals[1] += den
    return {"values": values, "sampled": sampled, "numerator": totals[0], "weight": totals[1],
            "flat": flat, "k": k, "multiplicity": 2.0 * voxels["multiplicity"],
            "box_px": work, "pixel_size_a": pixel_work}


def _turned(data, weight, k, rotation, shift_px, centring, box, multiplicity):
    """One particle's voxels splatted into a reference-frame grid (box³, centred, no padding),
    both Hermitian halves."""
    numerator = np.zeros((box,) * 3, np.complex64)
    denominator = np.zeros((box,) * 3, np.float32)
    phase = np.exp(2j * np.pi * (k @ np.asarray(shift_px, dtype=np.float32)) / box) * centring
    gridding.insert_voxels(numerator, denominator, data * phase, weight, k, rotation,
                           multiplicity, scale=1.0)
    return hermitian_sum(numerator), hermitian_sum(denominator)


def wedge_masked_differences(spectra: dict[str, np.ndarray]) -> np.ndarray:
    """Δ_i = m_i (N_i / M_i − A) (N, n) complex64, A the average of all particles."""
    weight = spectra["weight"]
    average = np.where(weight > 0, spectra["numerator"] / np.where(weight > 0, weight, 1), 0)
    return np.where(spectra["sampled"], spectra["values"] - average[None], 0).astype(
        np.complex64)


def constrained_covariance(differences: np.ndarray, sampled: np.ndarray,
                           multiplicity: np.ndarray) -> np.ndarray:
    """C_ij over the voxels both particles sampled, scaled to the whole sphere (N, N)."""
    w = np.asarray(multiplicity, dtype=np.float64)
    real = np.concatenate([differences.real, differences.imag], axis=1) * np.sqrt(
        np.concatenate([w, w]))[None]
    products = real @ real.T
    mask = sampled.astype(np.float64)
    overlap = (mask * w[None]) @ mask.T
    return products * (w.sum() / np.maximum(overlap, 1e-9 * w.sum()))


def principal_components(spectra: dict[str, np.ndarray], components: int = 3
                         ) -> ComponentAnalysis:
    """Leading components of the wedge-compensated covariance, with eigenvolumes."""
    differences = wedge_masked_differences(spectra)
    covariance = constrained_covariance(differences, spectra["sampled"],
                                        spectra["multiplicity"])
    eigenvalues, vectors = np.linalg.eigh(0.5 * (covariance + covariance.T))
    order = np.argsort(eigenvalues)[::-1][:components]
    values, vectors = eigenvalues[order], vectors[:, order]
    positive = eigenvalues[eigenvalues > 0].sum()
    coordinates = vectors * np.sqrt(np.maximum(values, 0.0))[None]
    volumes = np.stack([_eigenvolume(differences, spectra, vectors[:, c])
                        for c in range(len(order))])
    return ComponentAnalysis(coordinates, values, volumes, spectra["box_px"],
                             spectra["pixel_size_a"], values / max(positive, 1e-300))


def _eigenvolume(differences: np.ndarray, spectra: dict, vector: np.ndarray) -> np.ndarray:
    """Real-space eigenvolume (b³): per voxel Σ u_i Δ_i / Σ u_i² m_i."""
    box = spectra["box_px"]
    weights = (vector**2) @ spectra["sampled"].astype(np.float64)
    values = (vector @ differences) / np.maximum(weights, 1e-12)
    centre = np.full(3, box // 2, dtype=np.float32)
    uncentred = values * np.exp(-2j * np.pi * (spectra["k"] @ centre) / box)
    spectrum = np.zeros(box * box * (box // 2 + 1), np.complex64)
    spectrum[spectra["flat"]] = uncentred
    return scipy.fft.irfftn(spectrum.reshape(box, box, box // 2 + 1), s=(box,) * 3,
                            workers=-1).astype(np.float32)


def trajectory_averages(source: sources.ImageSource, rotations: np.ndarray,
                        shifts_a: np.ndarray, coordinate: np.ndarray, bins: int = 5,
                        *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Averages of the particles binned along one component (equal-count bins, low to high).

    Returns the maps (bins, B, B, B) at the full box and each particle's bin (N,).
    """
    coordinate = np.asarray(coordinate, dtype=float)
    ranks = np.argsort(np.argsort(coordinate, kind="stable"), kind="stable")
    which = np.minimum(ranks * bins // len(coordinate), bins - 1)
    builders = [Reconstructor(source.box_px) for _ in range(bins)]
    for batch in sources.batches(np.arange(source.count), batch_size):
        data, weight = source.batch(batch, source.box_px)
        for b in range(bins):
            members = np.flatnonzero(which[batch] == b)
            if len(members):
                indices = batch[members]
                builders[b].add(data[members], weight[members], rotations[indices],
                                shifts_a[indices] / source.pixel_size_a)
    return np.stack([b.reconstruct() for b in builders]), which


def lowpass(volume: np.ndarray, pixel_size_a: float, resolution_a: float) -> np.ndarray:
    """A map low-passed at ``resolution_a`` (for comparing trajectory ends)."""
    box = volume.shape[0]
    spectrum = scipy.fft.rfftn(volume, workers=-1) * fourier.lowpass_filter(
        (box,) * 3, pixel_size_a, resolution_a)
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)
