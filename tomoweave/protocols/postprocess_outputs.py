"""What the post-processing protocols write besides maps: the Guinier plot and the histogram
of a local-resolution map (PNG), and how an Average is read back (half maps, mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomoweave.algorithms.postprocess.sharpen import SharpenResult
from tomoweave.engine import ItemError, ProcessContext
from tomoweave.formats.mrc import MrcError, read_mrc
from tomoweave.model import Average, Volume

GUINIER_PNG, HISTOGRAM_PNG = "guinier.png", "local_resolution_histogram.png"


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def guinier_png(result: SharpenResult, path: Path, title: str) -> Path:
    """ln(mean amplitude) against 1/d²: plain, FSC-weighted (fitted), sharpened, and the line."""
    plt = _pyplot()
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
    plt = _pyplot()
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
