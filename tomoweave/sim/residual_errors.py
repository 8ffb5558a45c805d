"""Residual errors after tilt-series alignment, planted into a simulated series (issue 17).

A simulated series is perfectly known; real alignment and CTF estimation leave errors that
per-particle per-tilt refinement should remove. :func:`plant_residual_errors` draws them:

- per-tilt shifts (RMS of the 2D shift ``shift_rms_px`` tilt-image pixels),
- one tilt-angle offset for the series (± ``tilt_offset_deg``),
- per-tilt defocus errors (RMS ``defocus_rms_a``, the same on U and V),
- a smooth deformation of every tilt's field: a quadratic polynomial in the image position
  (no constant or linear part, which shift, rotation and magnification already describe),
  of RMS ``deformation_px`` over the field. It is in the *images*
  (:meth:`ResidualErrors.deform`), so the estimated geometry, which has none, misses it.

The estimated geometry and optics are what a refinement starts from; the true ones (with
the deformation) are what it is scored against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from tomoweave.algorithms.averaging.pseudo_subtomograms import TiltSeriesOptics
from tomoweave.algorithms.tilt_refinement.geometry import TiltGeometry, deformation_exponents
from tomoweave.sim.oracle import true_optics
from tomoweave.sim.truth import SeriesTruth


@dataclass
class ResidualErrors:
    """The true and the estimated geometry and optics of a series with planted errors."""

    true_geometry: TiltGeometry
    estimated_geometry: TiltGeometry
    true_optics: TiltSeriesOptics
    estimated_optics: TiltSeriesOptics
    pixel_size_a: float

    def deform(self, images: np.ndarray) -> np.ndarray:
        """The tilt images (T, ny, nx) with each tilt's true field deformation applied: the
        content at image point y moves to y + D_t(y) (cubic interpolation)."""
        count, ny, nx = images.shape
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        points = np.stack([(xx - nx // 2).ravel(), (yy - ny // 2).ravel()], 1)
        points *= self.pixel_size_a
        out = np.empty_like(images)
        for t in range(count):
            source = points.copy()
            for _ in range(3):  # y = x − D(y), fixed point
                source = points - self.true_geometry.deformation_at(t, source)
            coordinates = source / self.pixel_size_a + np.array([nx // 2, ny // 2])
            out[t] = ndimage.map_coordinates(images[t], [coordinates[:, 1].reshape(ny, nx),
                                                         coordinates[:, 0].reshape(ny, nx)],
                                             order=3, mode="nearest")
        return out

    def position_errors_px(self, geometry: TiltGeometry, positions_a: np.ndarray) -> np.ndarray:
        """|where ``geometry`` puts each particle − where it is| (N, T), tilt-image pixels."""
        error = geometry.project(positions_a) - self.true_geometry.project(positions_a)
        return np.linalg.norm(error, axis=-1) / self.pixel_size_a

    def defocus_errors_a(self, optics: TiltSeriesOptics) -> np.ndarray:
        """Mean defocus of ``optics`` − the true one, per tilt (T,), Å."""
        mean = 0.5 * (np.asarray(optics.defocus_u_a) + np.asarray(optics.defocus_v_a))
        true = 0.5 * (self.true_optics.defocus_u_a + self.true_optics.defocus_v_a)
        return mean - true


def plant_residual_errors(truth: SeriesTruth, *, seed: int = 0, shift_rms_px: float = 1.5,
                          tilt_offset_deg: float = 0.5, defocus_rms_a: float = 1000.0,
                          deformation_px: float = 1.0) -> ResidualErrors:
    """Draw residual errors for ``truth`` (see the module), deterministic in ``seed``.

    Parameters
    ----------
    shift_rms_px : RMS length of the per-tilt shift error, tilt-image pixels.
    tilt_offset_deg : size of the series' tilt-angle error, °.
    defocus_rms_a : RMS per-tilt defocus error, Å.
    deformation_px : RMS over the field of each tilt's deformation, tilt-image pixels.
    """
    rng = np.random.default_rng(seed)
    pixel = float(truth.pixel_size_a)
    half_size_a = 0.5 * max(truth.image_size_xy) * pixel
    exponents = deformation_exponents(2)
    true_geometry = TiltGeometry.from_alignments(truth.tilts, half_size_a, order=2)
    count = len(true_geometry)
    quadratic = np.array([a + b == 2 for a, b in exponents])
    coefficients = rng.normal(size=(count, 2, int(quadratic.sum())))
    true_geometry.deformation_a[:, :, quadratic] = coefficients
    rms = _field_rms_a(true_geometry)
    true_geometry.deformation_a *= (deformation_px * pixel / np.maximum(rms, 1e-12))[:, None,
                                                                                     None]
    estimated = TiltGeometry.from_alignments(truth.tilts, half_size_a, order=2)
    shift_errors = rng.normal(0.0, shift_rms_px * pixel / np.sqrt(2), size=(count, 2))
    estimated.shift_x_a -= shift_errors[:, 0]
    estimated.shift_y_a -= shift_errors[:, 1]
    estimated.y_tilt_deg -= tilt_offset_deg * rng.choice([-1.0, 1.0])
    optics = true_optics(truth)
    defocus_errors = rng.normal(0.0, defocus_rms_a, size=count)
    wrong = replace(optics, defocus_u_a=optics.defocus_u_a + defocus_errors,
                    defocus_v_a=optics.defocus_v_a + defocus_errors)
    return ResidualErrors(true_geometry, estimated, optics, wrong, pixel)


def _field_rms_a(geometry: TiltGeometry, samples: int = 21) -> np.ndarray:
    """RMS length of each tilt's deformation over the square field, Å (T,)."""
    axis = np.linspace(-1, 1, samples) * geometry.field_half_size_a
    points = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    return np.array([np.sqrt(np.mean(np.sum(geometry.deformation_at(t, points) ** 2, axis=1)))
                     for t in range(len(geometry))])


@dataclass
class PlantedSeries:
    """A simulated series ready for refinement: deformed contrast images, the planted
    errors, and the particles (true positions and rotations, half sets by region)."""

    images: np.ndarray
    errors: ResidualErrors
    positions_a: np.ndarray
    rotations: np.ndarray
    half_sets: np.ndarray


def planted_series(folder, truth: SeriesTruth, *, seed: int = 0, pure_noise: bool = False,
                   **error_options) -> PlantedSeries:
    """Load a simulated series from ``folder``, plant residual errors
    (:func:`plant_residual_errors` options) and deform its images.

    ``pure_noise`` replaces the images by Gaussian noise of the same mean and spread per tilt
    (no particle signal at all): a refinement must not find anything in it.
    """
    from pathlib import Path

    from tomoweave.algorithms.averaging.halves import split_half_sets
    from tomoweave.formats.mrc import read_mrc

    stack, _ = read_mrc(Path(folder) / truth.stack_file)
    contrast = (stack / stack.mean(axis=(1, 2), keepdims=True) - 1.0).astype(np.float32)
    if pure_noise:
        rng = np.random.default_rng([seed, 99])
        contrast = (rng.standard_normal(contrast.shape)
                    * contrast.std(axis=(1, 2), keepdims=True)).astype(np.float32)
    errors = plant_residual_errors(truth, seed=seed, **error_options)
    positions = truth.particle_positions_a()
    rotations = np.array([p.rotation for p in truth.placed_particles], dtype=float)
    radius = max(p.radius_a for p in truth.placed_particles)
    halves = split_half_sets(positions, [truth.name] * len(positions), 2 * radius)
    return PlantedSeries(errors.deform(contrast), errors, positions, rotations, halves)
