"""Particle density maps: loading the 10 Å templates and drawing them rotated at any pixel size.

A particle is drawn with one cubic-spline interpolation straight from the 10 Å map into the
specimen grid: rotation, rescaling and the sub-voxel position are one coordinate mapping, so the
particle's reference centre (index N // 2 of the template) lands exactly on its true position.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import fft, ndimage

from tomoweave.formats.mrc import read_mrc

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "templates_10A"


def template_dir() -> Path:
    """Folder of the template maps: $TOMOWEAVE_TEMPLATES or ../shared/data/templates_10A."""
    return Path(os.environ.get("TOMOWEAVE_TEMPLATES", DEFAULT_TEMPLATE_DIR))


@dataclass(frozen=True)
class Template:
    """A reference map, normalised so that its peak is 1, and its bounding radius."""

    name: str
    density: np.ndarray  # [z, y, x], float32, peak 1 (spline coefficients are computed lazily)
    pixel_size_a: float
    radius_a: float  # radius of the sphere around the centre holding all density above 2 % of peak


@lru_cache(maxsize=16)
def load_template(name: str, target_pixel_size_a: float) -> Template:
    """Load ``name``.mrc, low-pass it to the Nyquist of the target pixel size and normalise it."""
    path = template_dir() / f"{name}.mrc"
    if not path.exists():
        raise FileNotFoundError(f"{path}: template map not found (set TOMOWEAVE_TEMPLATES)")
    density, pixel_size_a = read_mrc(path)
    if density.ndim != 3 or len(set(density.shape)) != 1:
        raise ValueError(f"{path}: expected a cubic 3D map, got shape {density.shape}")
    pixel_size_a = pixel_size_a or 10.0
    density = np.clip(density, 0.0, None)
    if target_pixel_size_a > pixel_size_a:
        density = _lowpass(density, pixel_size_a, 0.5 / target_pixel_size_a)
    density = (density / density.max()).astype(np.float32)
    size = density.shape[0]
    grid = (np.indices(density.shape) - size // 2).reshape(3, -1)
    radii = np.sqrt((grid.astype(float) ** 2).sum(0))[density.ravel() > 0.02]
    radius_a = float(radii.max() + 1.0) * pixel_size_a
    return Template(name, density, float(pixel_size_a), radius_a)


def _lowpass(density: np.ndarray, pixel_size_a: float, cutoff_inv_a: float) -> np.ndarray:
    """Soft (raised-cosine) low-pass at ``cutoff_inv_a`` so that resampling does not alias."""
    spectrum = fft.rfftn(density, workers=-1)
    freqs = [np.fft.fftfreq(n, pixel_size_a) for n in density.shape[:2]]
    freqs.append(np.fft.rfftfreq(density.shape[2], pixel_size_a))
    fz, fy, fx = np.meshgrid(*freqs, indexing="ij")
    radius = np.sqrt(fx * fx + fy * fy + fz * fz)
    width = 0.15 * cutoff_inv_a
    ramp = np.clip((radius - (cutoff_inv_a - width)) / width, 0, 1)
    spectrum *= 0.5 * (1 + np.cos(np.pi * ramp))
    return fft.irfftn(spectrum, density.shape, workers=-1).real


@lru_cache(maxsize=16)
def _spline_coefficients(name: str, target_pixel_size_a: float) -> np.ndarray:
    template = load_template(name, target_pixel_size_a)
    return ndimage.spline_filter(template.density, order=3, output=np.float32)


def add_particle(volume: np.ndarray, pixel_size_a: float, template: Template,
                 position_a: np.ndarray, rotation: np.ndarray, scale: float) -> None:
    """Add ``scale`` × the rotated template centred at ``position_a`` (Å from the centre) in place.

    ``rotation`` (3×3) turns the reference into the particle: particle(x) = ref(Rᵀ (x − p)).
    """
    shape = np.array(volume.shape[::-1])  # x, y, z
    centre_px = np.asarray(position_a) / pixel_size_a + shape // 2
    half = int(np.ceil(template.radius_a / pixel_size_a)) + 2
    low = np.maximum(np.floor(centre_px).astype(int) - half, 0)
    high = np.minimum(np.floor(centre_px).astype(int) + half + 1, shape)
    if np.any(high <= low):
        return
    axes = [np.arange(low[i], high[i]) for i in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    offsets_a = (np.stack([xx, yy, zz], -1) - centre_px) * pixel_size_a  # (..., 3) xyz
    reference_a = offsets_a @ np.asarray(rotation)  # rows: Rᵀ applied to each offset
    ref_px = reference_a / template.pixel_size_a + template.density.shape[0] // 2
    coords = np.stack([ref_px[..., 2], ref_px[..., 1], ref_px[..., 0]])
    coefficients = _spline_coefficients(template.name, pixel_size_a)
    values = ndimage.map_coordinates(coefficients, coords.reshape(3, -1), order=3,
                                     prefilter=False, mode="constant", cval=0.0)
    values = np.clip(values, 0.0, None).reshape(zz.shape).astype(np.float32)
    volume[low[2]:high[2], low[1]:high[1], low[0]:high[0]] += scale * values
