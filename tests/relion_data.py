"""Small subtomogram data sets for the RELION plugin tests: a ribosome (PDB 4V4R) at known
orientations, each box multiplied by its signed 3D CTF model (±60° wedge, 2-4 µm defocus) and
Gaussian noise, written as a RELION 3.1 STAR that import.subtomograms brings into a project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.fft

from tomoweave.algorithms import extraction
from tomoweave.algorithms.fourier import lowpass_filter, rfft_from_centred_grid
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.api import Project
from tomoweave.formats.mrc import write_mrc
from tomoweave.formats.relion_subtomograms import write_relion31_subtomograms
from tomoweave.geometry.rotations import random_rotations
from tomoweave.model import Particle, Subtomogram
from tomoweave.sim.oracle import truth_map

TEMPLATE = "4v4r"


def write_subtomograms(folder: Path, *, count: int, box_px: int, pixel_size_a: float,
                       noise: float, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``folder/particles.star`` and its boxes; returns (truth map, rotations N×3×3).

    ``noise`` is the noise standard deviation as a multiple of each CTF-filtered box's."""
    rng = np.random.default_rng(seed)
    truth = truth_map(TEMPLATE, box_px, pixel_size_a)
    rotations = random_rotations(count, rng)
    items = []
    for index, rotation in enumerate(rotations):
        ctf = extraction.weight_volume(box_px, pixel_size_a, (-60.0, 60.0),
                                       {"defocus_a": float(rng.uniform(20000, 40000))})
        spectrum = scipy.fft.rfftn(rotate_volume(truth, rotation)) * rfft_from_centred_grid(ctf)
        observed = scipy.fft.irfftn(spectrum, (box_px,) * 3).astype(np.float32)
        observed += rng.normal(0, noise * observed.std(), observed.shape).astype(np.float32)
        name = f"p{index:03d}"
        box_path = write_mrc(folder / "boxes" / f"{name}.mrc", observed, pixel_size_a)
        ctf_path = write_mrc(folder / "boxes" / f"{name}_ctf.mrc", ctf, pixel_size_a)
        particle = Particle(name=name, tomogram="TS_01", rotation=rotation.tolist(),
                            position_a=(10.0 * index, 0.0, 5.0))
        items.append(Subtomogram(name=name, particle=particle, path=str(box_path),
                                 weight_path=str(ctf_path), pixel_size_a=pixel_size_a,
                                 box_size_px=box_px))
    write_relion31_subtomograms(folder / "particles.star", items, lambda p: p)
    return truth, rotations


def lowpassed(volume: np.ndarray, pixel_size_a: float, resolution_a: float) -> np.ndarray:
    spectrum = scipy.fft.rfftn(volume) * lowpass_filter(volume.shape, pixel_size_a, resolution_a)
    return scipy.fft.irfftn(spectrum, volume.shape).astype(np.float32)


def imported_project(root: Path, star: Path, name: str = "imported") -> Project:
    project = Project.init(root)
    run = project.run("import.subtomograms", params={"files": [str(star)]}, executor="inline",
                      name=name)
    assert run.state == "finished", run.record.error
    return project
