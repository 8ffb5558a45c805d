"""What the post-processing protocols write besides maps: the Guinier plot and the histogram
of a local-resolution map (PNG), and how an Average is read back (half maps, mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomoweave.algorithms.postprocess.sharpen import SharpenResult
from tomoweave.engine import ItemError, ProcessContext
from tomoweave.formats.mrc import MrcError, read_mrc
from tomoweave.model import Average, Volume
from tomoweave.plotting import pyplot

GUINIER_PNG, HISTOGRAM_PNG = "guinier.png", "local_resolution_histogram.png"
LOCAL_RESOLUTION_PNG, MAP_BACK_PNG = "local_resolution_slices.png", "map_back.png"


def read_map(context: ProcessContext, stored_path: str | None, what: str) -> np.ndarray:
    """A volume of the project (float32), or an ItemError naming what and where."""
    if not stored_path:
        raise ItemError(f"{what}: no file recorded")
    try:
        volume, _ = read_mrc(context.resolve(stored_path))
    except (MrcError, OSError, ValueError) as error:
        raise ItemError(f"{what}: {stored_path}: {error}") from None
    return np.asarray(volume, dtype=np.float32)


def half_maps(context: ProcessContext, average: Average) -> tuple[np.ndarray, np.ndarray]:
    """The two half maps of an Average (one shape, cubic), or an ItemError."""
    if not average.half1_path or not average.half2_path:
        raise ItemError(f"average {average.name}: half1_path and half2_path are needed (an "
                        "average without half maps cannot be post-processed)")
    half1 = read_map(context, average.half1_path, f"average {average.name} half1_path")
    half2 = read_map(context, average.half2_path, f"average {average.name} half2_path")
    if half1.shape != half2.shape or len(set(half1.shape)) != 1:
        raise ItemError(f"average {average.name}: half maps of shapes {half1.shape[::-1]} and "
                        f"{half2.shape[::-1]} (x, y, z): expected two cubes of one size")
    return half1, half2


def mask_of(context: ProcessContext, volume: Volume, shape: tuple[int, ...]) -> np.ndarray:
    """A mask volume checked against the map's shape and clipped to 0 … 1."""
    mask = read_map(context, volume.path, f"mask {volume.name}")
    if mask.shape != tuple(shape):
        raise ItemError(f"mask {volume.name}: {volume.path}: shape {mask.shape[::-1]} (x, y, z), "
                        f"the half maps are {tuple(shape)[::-1]}")
    return np.clip(mask, 0.0, 1.0)



def guinier_png(result: SharpenResult, path: Path, title: str) -> Path:
    """ln(mean amplitude) against 1/d²: plain, FSC-weighted (fitted), sharpened, and the line."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.6))
    s2 = result.guinier_s2_inv_a2
    for label, curve, colour in (("map", result.guinier_ln_plain, "#718096"),
                                 ("FSC-weighted", result.guinier_ln_weighted, "#2b6cb0"),
                                 ("sharpened", result.guinier_ln_sharpened, "#38a169")):
        axes.plot(s2, curve, label=label, color=colour, linewidth=1.2)
    fit = result.guinier
    if np.isfinite(fit.intercept):
        low, high = fit.range_a
        span = np.array([1 / low**2, 1 / high**2])
        axes.plot(span, fit.intercept - fit.bfactor_a2 / 4 * span, color="#c53030",
                  linestyle="--", label=f"fit: B = {fit.bfactor_a2:.0f} Å²")
        axes.axvspan(*span, color="#fed7d7", alpha=0.4, linewidth=0)
    axes.set_xlabel("1/d² (1/Å²)")
    axes.set_ylabel("ln(mean |F|)")
    axes.set_title(f"{title}: B = {fit.bfactor_a2:.0f} Å², {result.resolution_a:.1f} Å",
                   fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def histogram_png(values_a: np.ndarray, path: Path, title: str) -> Path:
    """Histogram of local resolutions (Å), median marked."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    values = np.asarray(values_a, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size:
        axes.hist(values, bins=40, color="#2b6cb0")
        median = float(np.median(values))
        axes.axvline(median, color="#c53030", linestyle="--", label=f"median {median:.1f} Å")
        axes.legend(fontsize=7)
    axes.set_xlabel("local resolution (Å)")
    axes.set_ylabel("voxels")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def local_resolution_png(volume: np.ndarray, resolution_a: np.ndarray, path: Path,
                         title: str) -> Path:
    """Central XY, XZ and YZ slices of a map (grey) with its local resolution in colour."""
    plt = pyplot()
    z, y, x = (n // 2 for n in volume.shape)
    planes = [("XY", volume[z], resolution_a[z]), ("XZ", volume[:, y, :], resolution_a[:, y, :]),
              ("YZ", volume[:, :, x], resolution_a[:, :, x])]
    values = resolution_a[resolution_a > 0]
    low, high = (np.percentile(values, [2, 98]) if values.size else (0.0, 1.0))
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    image = None
    for axis, (label, plane, local) in zip(axes, planes, strict=True):
        axis.imshow(plane, cmap="gray", origin="lower")
        shown = np.ma.masked_where(local <= 0, local)
        image = axis.imshow(shown, cmap="turbo", alpha=0.55, vmin=low,
                            vmax=high if high > low else low + 1, origin="lower")
        axis.set_title(f"central {label}", fontsize=9)
        axis.set_axis_off()
    figure.colorbar(image, ax=list(axes), label="local resolution (Å)", shrink=0.8)
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def map_back_png(tomogram: np.ndarray | None, placed: np.ndarray, path: Path,
                 title: str) -> Path:
    """The central XY slice of the tomogram (grey) with the placed copies outlined."""
    plt = pyplot()
    z = placed.shape[0] // 2
    figure, axis = plt.subplots(figsize=(5, 5))
    if tomogram is not None and tomogram.shape == placed.shape:
        plane = tomogram[z]
        low, high = np.percentile(plane, [1, 99])
        axis.imshow(plane, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6))
    slab = placed[max(0, z - 2):z + 3].max(axis=0)
    if slab.max() > 0:
        axis.contour(slab, levels=[0.5 * float(slab.max())], colors="#f6ad55", linewidths=1)
    axis.set_title(title, fontsize=9)
    axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
