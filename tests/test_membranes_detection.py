"""Membrane detection and oriented membrane points against the simulator's vesicle."""

from __future__ import annotations

import numpy as np
import pytest
from test_pick_support import degrade

from tomoweave.algorithms import membranes
from tomoweave.algorithms import particle_pruning as pp
from tomoweave.algorithms.fourier import fourier_crop
from tomoweave.geometry.rotations import random_rotations, rotation_z
from tomoweave.sim import resolve_config
from tomoweave.sim.specimen import build_specimen


@pytest.fixture(scope="module")
def vesicle_tomogram():
    """The simulator's vesicle (test preset), binned to 20 Å, behind a wedge and noise."""
    config = resolve_config("test", particles_on=False, beads_on=False)
    specimen = build_specimen(config, np.random.default_rng(2))
    volume = specimen.volume_v
    binned = fourier_crop(volume, tuple(s // 2 for s in volume.shape))
    noisy = degrade(binned, np.random.default_rng(0), snr=0.5, contrast=-1.0)
    return noisy, 2 * specimen.pixel_size_a, specimen


def _true_distance_and_normal(points_a, vesicle):
    centre, radii = np.asarray(vesicle.centre_a), np.asarray(vesicle.radii_a)
    scaled = (points_a - centre) / radii
    norm = np.linalg.norm(scaled, axis=1)
    gradient = scaled / radii
    distance = (norm - 1) / np.linalg.norm(gradient / np.maximum(norm, 1e-9)[:, None], axis=1)
    normal = gradient / np.linalg.norm(gradient, axis=1, keepdims=True)
    return distance, normal


def test_membrane_points_lie_on_the_vesicle_with_its_normal(vesicle_tomogram):
    tomogram, pixel, truth = vesicle_tomogram
    segmentation = membranes.segment_membranes(tomogram, pixel, thickness_a=60.0)
    assert segmentation.count >= 1
    positions, normals, ids = membranes.oriented_points(segmentation, 60.0 / pixel)
    centre = np.array(tomogram.shape[::-1]) // 2
    points_a = (positions - centre) * pixel
    distance, true_normal = _true_distance_and_normal(points_a, truth.vesicles[0])
    on_surface = np.abs(distance) <= 30.0
    angles = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", normals, true_normal), -1, 1)))
    print(f"\nmembranes: {segmentation.count} labels, {len(points_a)} points, "
          f"{on_surface.mean():.1%} within 30 Å of the vesicle, median normal error "
          f"{np.median(angles[on_surface]):.1f}°")
    assert len(points_a) >= 30
    assert on_surface.mean() >= 0.85
    assert np.median(angles[on_surface]) <= 15.0
    assert np.mean(angles[on_surface] <= 30.0) >= 0.9


def test_filter_normal_on_membrane_particles(vesicle_tomogram):
    """Particles on the detected membrane, oriented by the true normal; 20 % wrong ones."""
    tomogram, pixel, truth = vesicle_tomogram
    segmentation = membranes.segment_membranes(tomogram, pixel, thickness_a=60.0)
    positions, detected_normals, _ = membranes.oriented_points(segmentation, 60.0 / pixel)
    centre = np.array(tomogram.shape[::-1]) // 2
    points_a = (positions - centre) * pixel
    _, true_normal = _true_distance_and_normal(points_a, truth.vesicles[0])
    rng = np.random.default_rng(7)
    wrong = np.zeros(len(points_a), dtype=bool)
    wrong[rng.choice(len(points_a), len(points_a) // 5, replace=False)] = True
    rotations = []
    for normal, is_wrong in zip(true_normal, wrong, strict=True):
        if is_wrong:
            rotation = random_rotations(1, rng)[0]
            while np.degrees(np.arccos(np.clip(rotation[:, 2] @ normal, -1, 1))) < 60:
                rotation = random_rotations(1, rng)[0]
        else:
            rotation = membranes.rotation_from_normal(normal) @ rotation_z(rng.uniform(0, 360))
        rotations.append(rotation)
    keep = pp.filter_by_normal(np.array(rotations), detected_normals, tolerance_deg=30.0)
    true_positive = np.sum(keep & ~wrong)
    precision, recall = true_positive / max(keep.sum(), 1), true_positive / np.sum(~wrong)
    print(f"\nfilter_normal: precision {precision:.3f}, recall {recall:.3f} on {len(keep)}")
    assert precision >= 0.95 and recall >= 0.95


def test_sheetness_prefers_sheets_over_blobs():
    volume = np.zeros((40, 40, 40), dtype=np.float32)
    volume[20, :, :] = -1.0  # a dark plane z = 20
    volume[8:12, 8:12, 8:12] = -1.0  # a dark blob
    sheetness, normals = membranes.hessian_sheetness(volume, 1.5)
    assert sheetness[20, 30, 30] > 5 * sheetness[10, 10, 10]
    assert abs(normals[2, 20, 30, 30]) > 0.99  # the plane's normal is z


def test_membrane_protocols_end_to_end(vesicle_tomogram, tmp_path):
    from tomoweave.api import Project
    from tomoweave.formats.mrc import write_mrc

    tomogram, pixel, specimen = vesicle_tomogram
    path = write_mrc(tmp_path / "TS_01.mrc", tomogram, pixel)
    project = Project.init(tmp_path / "project")
    imported = project.run("import.tomogram", params={"files": [str(path)]}, executor="inline")
    segmented = project.run("segment.membranes", inputs={"tomograms": imported.name},
                            params={"thickness_a": 60.0}, executor="inline")
    segmentation = project.items(segmented, "segmentations")[0]
    assert segmentation.label_count >= 1
    labels, _ = read_labels(project.path(segmentation.path))
    assert labels.max() == segmentation.label_count
    picked = project.run("pick.membrane", inputs={"tomograms": imported.name},
                         params={"thickness_a": 60.0, "spacing_a": 80.0}, executor="inline")
    points = project.items(picked, "particles")
    assert len(points) >= 20
    assert all(p.membrane_id is not None and p.normal is not None for p in points)
    axes = np.array([p.rotation_matrix[:, 2] for p in points])
    assert np.allclose(axes, np.array([p.normal for p in points]), atol=1e-6)
    positions = np.array([p.position_a for p in points])
    spacing = np.sort(np.linalg.norm(positions[:, None] - positions[None], axis=2), axis=1)[:, 1]
    assert np.median(spacing) >= 0.6 * 80.0
    kept = project.run("particles.filter_normal", inputs={"particles": picked.name},
                       params={"tolerance_deg": 10.0}, executor="inline")
    assert len(project.items(kept, "particles")) == len(points)  # their own normals
    fitted = project.run("particles.fit_vesicles", inputs={"particles": picked.name},
                         params={"max_distance_a": 60.0}, executor="inline")
    on_vesicle = project.items(fitted, "particles")
    assert len(on_vesicle) >= 0.8 * len(points)


def read_labels(path):
    from tomoweave.formats.mrc import read_mrc

    return read_mrc(path)
