"""What the averaging protocols write: maps as MRC, the Average item, refined subtomograms, and
the pictures (FSC with the 0.143 line and the phase-randomised curve, central slices, angular
distribution, resolution per iteration). Public helpers shared by average.* protocols."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomoweave.algorithms.averaging.fsc import GoldStandardFsc
from tomoweave.engine import ProcessContext
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Average, FscShell, Particle, Subtomogram, Volume
from tomoweave.plotting import pyplot

FSC_PNG, SLICES_PNG, ANGLES_PNG, ITERATIONS_PNG = ("fsc.png", "central_slices.png",
                                                   "angular_distribution.png",
                                                   "iterations.png")


def write_map(context: ProcessContext, filename: str, volume: np.ndarray,
              pixel_size_a: float) -> str:
    """Write ``volume`` into the run's outputs (header pixel size set); project-relative path."""
    return context.relative(write_mrc(context.output_path(filename),
                                      np.asarray(volume, dtype=np.float32), pixel_size_a))


def average_item(name: str, paths: dict[str, str], pixel_size_a: float, box_px: int,
                 fsc: GoldStandardFsc, *, symmetry: str, particle_count: int,
                 iterations: list[dict] | None = None) -> Average:
    """The Average of a refinement: ``paths`` maps path/half1_path/half2_path/mask_path."""
    return Average(name=name, pixel_size_a=pixel_size_a, size_xyz=(box_px,) * 3,
                   fsc=[FscShell(**row) for row in fsc.curve_records()],
                   fsc_threshold=fsc.threshold, resolution_a=float(fsc.resolution_a),
                   particle_count=particle_count, symmetry=symmetry, iterations=iterations,
                   **paths)


def map_volume(name: str, path: str, pixel_size_a: float, box_px: int, symmetry: str) -> Volume:
    return Volume(name=name, path=path, pixel_size_a=pixel_size_a, size_xyz=(box_px,) * 3,
                  symmetry=symmetry)


def refined_subtomograms(subtomograms: list[Subtomogram], rotations: np.ndarray,
                         shifts_a: np.ndarray, scores: np.ndarray | None,
                         half_sets: np.ndarray | None) -> list[Subtomogram]:
    """The subtomograms with their particles' refined pose, score and half set (scores or
    half sets None: the particles keep theirs)."""
    refined = []
    for index, item in enumerate(subtomograms):
        update = {"rotation": np.asarray(rotations[index]).tolist(),
                  "shift_a": tuple(float(v) for v in shifts_a[index])}
        if scores is not None:
            update["score"] = float(scores[index])
        if half_sets is not None:
            update["half_set"] = int(half_sets[index])
        particle = Particle(**{**item.particle.model_dump(), **update})
        refined.append(item.model_copy(update={"particle": particle}))
    return refined


def refined_particles(subtomograms: list[Subtomogram]) -> list[Particle]:
    """The particles of refined subtomograms where they are: position_a + shift_a (exports
    and pickers read positions; the shift stays with the subtomogram's box)."""
    return [item.particle.model_copy(update={
        "position_a": item.particle.refined_position_a, "shift_a": None})
        for item in subtomograms]



def fsc_png(fsc: GoldStandardFsc, path: Path, title: str) -> Path:
    """The gold-standard FSC curves against resolution, the threshold line and the crossing."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.6))
    frequency = fsc.frequencies_inv_a
    curves = [("corrected", fsc.corrected, "#2b6cb0", 2.0), ("unmasked", fsc.unmasked,
                                                            "#718096", 1.0)]
    if fsc.masked is not None:
        curves += [("masked", fsc.masked, "#38a169", 1.0),
                   ("phase-randomised", fsc.randomised, "#d69e2e", 1.0)]
    for label, curve, colour, width in curves:
        axes.plot(frequency, curve, label=label, color=colour, linewidth=width)
    axes.axhline(fsc.threshold, color="#c53030", linestyle="--", linewidth=1,
                 label=f"{fsc.threshold:g}")
    if np.isfinite(fsc.resolution_a) and fsc.resolution_a > 0:
        axes.axvline(1.0 / fsc.resolution_a, color="#c53030", linewidth=0.8)
    ticks = axes.get_xticks()
    axes.set_xticks(ticks)
    axes.set_xticklabels(["∞" if t <= 0 else f"{1 / t:.0f}" for t in ticks])
    axes.set_xlim(0, frequency[-1])
    axes.set_ylim(-0.1, 1.05)
    axes.set_xlabel("resolution (Å)")
    axes.set_ylabel("FSC")
    axes.set_title(f"{title}: {fsc.resolution_a:.1f} Å at FSC {fsc.threshold:g}", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def slices_png(volume: np.ndarray, path: Path, title: str) -> Path:
    """Central XY, XZ and YZ slices of a map, one grey scale."""
    plt = pyplot()
    box = volume.shape[0]
    planes = [("XY", volume[box // 2]), ("XZ", volume[:, box // 2, :]),
              ("YZ", volume[:, :, box // 2])]
    low, high = np.percentile(volume, [1, 99.5])
    figure, axes = plt.subplots(1, 3, figsize=(8, 3))
    for axis, (label, image) in zip(axes, planes, strict=True):
        axis.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1,
                    origin="lower")
        axis.set_title(f"central {label}", fontsize=9)
        axis.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def angles_png(rotations: np.ndarray, path: Path, title: str) -> Path:
    """Where each particle's reference Z axis points (azimuth, elevation), as a 2D histogram."""
    plt = pyplot()
    directions = np.asarray(rotations).reshape(-1, 3, 3)[:, :, 2]  # R @ (0, 0, 1)
    azimuth = np.degrees(np.arctan2(directions[:, 1], directions[:, 0]))
    elevation = np.degrees(np.arcsin(np.clip(directions[:, 2], -1, 1)))
    figure, axes = plt.subplots(figsize=(6, 3.2))
    counts, _, _, image = axes.hist2d(azimuth, elevation, bins=(36, 18),
                                      range=((-180, 180), (-90, 90)), cmap="viridis")
    figure.colorbar(image, ax=axes, label="particles")
    axes.set_xlabel("azimuth of the reference Z axis (°)")
    axes.set_ylabel("elevation (°)")
    axes.set_title(f"{title}: {len(directions)} particles", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def iterations_png(history: list[dict], path: Path, title: str) -> Path:
    """Resolution and mean angular change per iteration."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    steps = [h["iteration"] for h in history]
    axes.plot(steps, [h["resolution_a"] for h in history], "o-", color="#2b6cb0")
    axes.set_xlabel("iteration")
    axes.set_ylabel("resolution (Å)", color="#2b6cb0")
    other = axes.twinx()
    other.plot(steps, [h["mean_angular_change_deg"] for h in history], "s--", color="#d69e2e")
    other.set_ylabel("mean angular change (°)", color="#d69e2e")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
