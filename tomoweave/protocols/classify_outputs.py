"""What the classification protocols write: class averages as ``Average`` items (map, halves,
FSC, occupancy), subtomograms with their class (and component coordinates), and the pictures:
occupancy per iteration, central slices of every class, component scatter coloured by
cluster, eigenvolume slices, the 2D class gallery with the kept classes framed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.algorithms.classification.classes3d import ClassifyResult
from tomoweave.engine import InputError, ProcessContext
from tomoweave.model import Average, FscShell, Particle, Subtomogram
from tomoweave.plotting import pyplot
from tomoweave.protocols import average_outputs

OCCUPANCY_PNG, CLASSES_PNG = "occupancy.png", "class_slices.png"
SCATTER_PNG, EIGENVOLUMES_PNG, GALLERY_PNG = ("components.png", "eigenvolumes.png",
                                              "classes_2d.png")


def checked_subtomograms(name: str, inputs: dict[str, Any], least: int) -> list[Subtomogram]:
    """The input 'subtomograms' (at least ``least``, one box and pixel size) or InputError."""
    subtomograms = list(inputs.get("subtomograms") or [])
    if len(subtomograms) < least:
        raise InputError(f"{name}: needs at least {least} subtomograms, got {len(subtomograms)}")
    first = subtomograms[0]
    for item in subtomograms:
        if item.box_size_px != first.box_size_px or not np.isclose(
                item.pixel_size_a, first.pixel_size_a, rtol=1e-4):
            raise InputError(f"subtomogram {item.name}: box {item.box_size_px} px at "
                             f"{item.pixel_size_a:g} Å differs from {first.name}'s "
                             f"{first.box_size_px} px at {first.pixel_size_a:g} Å")
    return subtomograms


def class_averages(context: ProcessContext, result: ClassifyResult, pixel_size_a: float, *,
                   symmetry: str = "C1", prefix: str = "class") -> list[Average]:
    """One Average per class (``class_01`` …): FSC-weighted map, half maps, FSC when both
    halves have particles, occupancy and particle count. Empty classes are reported too."""
    count = len(result.labels)
    box = result.maps.shape[1]
    items = []
    for k in range(len(result.maps)):
        name = f"{prefix}_{k + 1:02d}"
        paths = {"path": average_outputs.write_map(context, f"{name}.mrc", result.maps[k],
                                                   pixel_size_a)}
        for h in (1, 2):
            paths[f"half{h}_path"] = average_outputs.write_map(
                context, f"{name}_half{h}.mrc", result.half_maps[k, h - 1], pixel_size_a)
        fsc = result.fsc[k]
        extra = {}
        if fsc is not None:
            extra = {"fsc": [FscShell(**row) for row in fsc.curve_records()],
                     "fsc_threshold": fsc.threshold, "resolution_a": float(fsc.resolution_a)}
        items.append(Average(name=name, pixel_size_a=pixel_size_a, size_xyz=(box,) * 3,
                             particle_count=int(np.sum(result.labels == k)), symmetry=symmetry,
                             class_id=k + 1, occupancy=float(result.occupancy[k] / max(count, 1)),
                             iterations=result.state.history or None, **paths, **extra))
    return items


def classified_subtomograms(subtomograms: list[Subtomogram], labels: np.ndarray, *,
                            rotations: np.ndarray | None = None,
                            shifts_a: np.ndarray | None = None,
                            scores: np.ndarray | None = None,
                            components: np.ndarray | None = None) -> list[Subtomogram]:
    """The subtomograms with their particles' class (``class_id`` = label + 1: classes count
    from 1 as in RELION, Dynamo and the converters) and, when given, pose, score, component
    coordinates."""
    out = []
    for i, item in enumerate(subtomograms):
        update: dict = {"class_id": int(labels[i]) + 1}
        if rotations is not None:
            update["rotation"] = np.asarray(rotations[i]).tolist()
        if shifts_a is not None:
            update["shift_a"] = tuple(float(v) for v in shifts_a[i])
        if scores is not None:
            update["score"] = float(scores[i])
        if components is not None:
            update["components"] = [float(v) for v in components[i]]
        particle = Particle(**{**item.particle.model_dump(), **update})
        out.append(item.model_copy(update={"particle": particle}))
    return out


def occupancy_png(history: list[dict], path: Path, title: str) -> Path:
    """Particles per class (Σ posterior) at every iteration, and the fraction that changed."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    steps = [h["iteration"] for h in history]
    occupancy = np.array([h["occupancy"] for h in history])
    for k in range(occupancy.shape[1]):
        axes.plot(steps, occupancy[:, k], "o-", label=f"class {k + 1}")
    axes.set_xlabel("iteration")
    axes.set_ylabel("particles")
    other = axes.twinx()
    other.plot(steps, [100 * h["changed_fraction"] for h in history], "k--", linewidth=0.8)
    other.set_ylabel("changed class (%)")
    axes.legend(fontsize=7)
    axes.set_title(title, fontsize=9)
    return _save(plt, figure, path)


def class_slices_png(maps: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """Central XY and XZ slices of every class map, one row per class."""
    plt = pyplot()
    count, box = len(maps), maps.shape[1]
    figure, axes = plt.subplots(count, 2, figsize=(4, 2 * count), squeeze=False)
    for row, (volume, label) in enumerate(zip(maps, labels, strict=True)):
        low, high = np.percentile(volume, [1, 99.5])
        for column, image in enumerate((volume[box // 2], volume[:, box // 2, :])):
            axes[row, column].imshow(image, cmap="gray", vmin=low,
                                     vmax=high if high > low else low + 1, origin="lower")
            axes[row, column].set_axis_off()
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    figure.suptitle(title, fontsize=9)
    return _save(plt, figure, path)


def scatter_png(coordinates: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    """Particles on the first two components, coloured by cluster."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    second = coordinates[:, 1] if coordinates.shape[1] > 1 else np.zeros(len(coordinates))
    points = axes.scatter(coordinates[:, 0], second, c=labels, cmap="tab10", s=10)
    figure.colorbar(points, ax=axes, label="cluster")
    axes.set_xlabel("component 1")
    axes.set_ylabel("component 2")
    axes.set_title(title, fontsize=9)
    return _save(plt, figure, path)


def eigenvolumes_png(volumes: np.ndarray, explained: np.ndarray, path: Path) -> Path:
    """Central XY, XZ, YZ slices of each eigenvolume (symmetric grey scale)."""
    rows = len(volumes)
    labels = [f"component {c + 1} ({100 * explained[c]:.1f} %)" for c in range(rows)]
    plt = pyplot()
    box = volumes.shape[1]
    figure, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
    for row, volume in enumerate(volumes):
        limit = float(np.abs(volume).max()) or 1.0
        planes = (volume[box // 2], volume[:, box // 2, :], volume[:, :, box // 2])
        for column, image in enumerate(planes):
            axes[row, column].imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit,
                                     origin="lower")
            axes[row, column].set_axis_off()
        axes[row, 0].set_title(labels[row], fontsize=8, loc="left")
    return _save(plt, figure, path)


def gallery_png(averages: np.ndarray, sizes: list[int], scores: np.ndarray,
                kept: np.ndarray, path: Path) -> Path:
    """The 2D class averages in a grid (numbered from 1), with size and particle score; kept
    classes (``kept``: 0-based indices) framed."""
    plt = pyplot()
    count = len(averages)
    columns = min(count, 5)
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 2.0 * rows),
                                squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= count:
            axis.set_axis_off()
            continue
        axis.imshow(averages[index], cmap="gray", origin="lower")
        keep = index in set(np.asarray(kept).tolist())
        for spine in axis.spines.values():
            spine.set_color("#38a169" if keep else "#c53030")
            spine.set_linewidth(3 if keep else 1)
        axis.set_title(f"{index + 1}: {sizes[index]} p, {scores[index]:.1f}", fontsize=7)
    figure.suptitle("2D classes (green: kept)", fontsize=9)
    return _save(plt, figure, path)



def _save(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
