"""Plots and files of the refine.* protocols: per-tilt corrections against the tilt angle, the
field deformation as arrows, defocus corrections and scales, resolution per cycle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tomoweave.plotting import pyplot

CORRECTIONS_PNG, DEFORMATION_PNG, CTF_PNG, CYCLES_PNG = (
    "tilt_corrections.png", "deformation.png", "ctf_corrections.png", "resolution_cycles.png")



def corrections_png(tilt_deg: np.ndarray, changes: dict[str, np.ndarray], path: Path,
                    title: str) -> Path:
    """Each refined quantity's change (one panel each) against the tilt angle."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(changes), figsize=(3.2 * len(changes), 3.0),
                                squeeze=False)
    order = np.argsort(tilt_deg)
    for axis, (label, values) in zip(axes[0], changes.items(), strict=True):
        axis.plot(np.asarray(tilt_deg)[order], np.asarray(values)[order], "o-", ms=3)
        axis.axhline(0.0, color="0.6", lw=0.8)
        axis.set_xlabel("tilt (°)")
        axis.set_title(label, fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def deformation_png(geometry, tilt_deg: np.ndarray, path: Path, title: str,
                    panels: int = 4) -> Path:
    """The deformation field of the tilts where it is largest, as arrows over the field (arrow
    lengths magnified; the scale is in the panel title)."""
    plt = pyplot()
    half = geometry.field_half_size_a
    axis = np.linspace(-0.9, 0.9, 9) * half
    points = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    fields = [geometry.deformation_at(t, points) for t in range(len(geometry))]
    sizes = np.array([np.sqrt(np.mean(np.sum(f**2, 1))) for f in fields])
    chosen = np.argsort(-sizes)[:panels]
    figure, axes = plt.subplots(1, len(chosen), figsize=(3.0 * len(chosen), 3.2), squeeze=False)
    for ax, t in zip(axes[0], chosen, strict=True):
        largest = max(float(np.max(np.linalg.norm(fields[t], axis=1))), 1e-6)
        magnify = 0.25 * half / largest
        ax.quiver(points[:, 0], points[:, 1], fields[t][:, 0] * magnify,
                  fields[t][:, 1] * magnify, angles="xy", scale_units="xy", scale=1)
        ax.set_aspect("equal")
        ax.set_xlim(-half, half)
        ax.set_ylim(-half, half)
        ax.set_title(f"{tilt_deg[t]:+.0f}°: RMS {sizes[t]:.1f} Å, ×{magnify:.0f}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def cycles_png(resolutions_a: list[float], path: Path, title: str) -> Path:
    """Gold-standard resolution after each refinement cycle or step (0: before)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 3.0))
    axis.plot(range(len(resolutions_a)), resolutions_a, "o-")
    axis.set_xlabel("cycle or step (0: before)")
    axis.set_ylabel("resolution (Å)")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_json(path: Path, values: dict) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(values, indent=1))
    temporary.replace(path)
    return path
