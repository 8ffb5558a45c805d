"""Small subtomogram data sets for the RELION plugin tests: a ribosome (PDB 4V4R) at known
orientations, each box multiplied by its signed 3D CTF model (±60° wedge, 2-4 µm defocus) and
Gaussian noise, written as a RELION 3.1 STAR that import.subtomograms brings into a project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.fft
from scipy.spatial.transform import Rotation

from tomoweave.algorithms import extraction
from tomoweave.algorithms.averaging.particle_images import load_particle_images
from tomoweave.algorithms.averaging.reconstruction import Reconstructor
from tomoweave.algorithms.fourier import lowpass_filter, rfft_from_centred_grid
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.api import Project
from tomoweave.engine import Input, Output, ProcessContext, Protocol, Task
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import write_mrc
from tomoweave.formats.relion_subtomograms import write_relion31_subtomograms
from tomoweave.geometry.rotations import random_rotations
from tomoweave.model import Average, Particle, Subtomogram
from tomoweave.sim.oracle import truth_map

TEMPLATE = "4v4r"


def write_subtomograms(folder: Path, *, count: int, box_px: int, pixel_size_a: float,
                       noise: float, seed: int = 5, ctf: bool = True,
                       templates: tuple[str, ...] = (TEMPLATE,),
                       prior_error_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``folder/particles.star`` and its boxes; returns (truth map of the first template,
    true rotations N×3×3).

    ``noise`` is the noise standard deviation as a multiple of each filtered box's; the
    weight is the signed 3D CTF model (±60° wedge × CTF at 2-4 µm), or the wedge alone when
    ``ctf`` is False. Particle ``i`` shows ``templates[i % len(templates)]``. The STAR's
    orientations are the true ones turned by ``prior_error_deg`` about a random axis (the
    priors a picker would give)."""
    rng = np.random.default_rng(seed)
    truths = [truth_map(t, box_px, pixel_size_a) for t in templates]
    rotations = random_rotations(count, rng)
    items = []
    for index, rotation in enumerate(rotations):
        weight = extraction.weight_volume(
            box_px, pixel_size_a, (-60.0, 60.0),
            {"defocus_a": float(rng.uniform(20000, 40000))} if ctf else None)
        truth = truths[index % len(truths)]
        spectrum = scipy.fft.rfftn(rotate_volume(truth, rotation)) * rfft_from_centred_grid(
            weight)
        observed = scipy.fft.irfftn(spectrum, (box_px,) * 3).astype(np.float32)
        observed += rng.normal(0, noise * observed.std(), observed.shape).astype(np.float32)
        name = f"p{index:03d}"
        box_path = write_mrc(folder / "boxes" / f"{name}.mrc", observed, pixel_size_a)
        ctf_path = write_mrc(folder / "boxes" / f"{name}_ctf.mrc", weight, pixel_size_a)
        prior = rotation
        if prior_error_deg:
            axis = rng.normal(size=3)
            prior = Rotation.from_rotvec(np.radians(prior_error_deg) * axis
                                         / np.linalg.norm(axis)).as_matrix() @ rotation
        particle = Particle(name=name, tomogram="TS_01", rotation=prior.tolist(),
                            position_a=(10.0 * index, 0.0, 5.0))
        items.append(Subtomogram(name=name, particle=particle, path=str(box_path),
                                 weight_path=str(ctf_path), pixel_size_a=pixel_size_a,
                                 box_size_px=box_px))
    write_relion31_subtomograms(folder / "particles.star", items, lambda p: p)
    return truths[0], rotations


def lowpassed(volume: np.ndarray, pixel_size_a: float, resolution_a: float) -> np.ndarray:
    spectrum = scipy.fft.rfftn(volume) * lowpass_filter(volume.shape, pixel_size_a, resolution_a)
    return scipy.fft.irfftn(spectrum, volume.shape).astype(np.float32)


def imported_project(root: Path, star: Path, name: str = "imported") -> Project:
    project = Project.init(root)
    run = project.run("import.subtomograms", params={"files": [str(star)]}, executor="inline",
                      name=name)
    assert run.state == "finished", run.record.error
    return project


class OracleAverage(Protocol):
    """Test helper: half maps of subtomograms at their (true) orientations, even/odd split,
    by tomoweave's reconstruction from poses (sim.oracle), as an Average with half maps."""

    name = "test.oracle_average"
    inputs = {"subtomograms": Input(Subtomogram, mapped=False)}
    outputs = {"average": Output(Average)}

    def plan(self, params, inputs):
        return [Task(key="oracle", payload={})]

    def process(self, payload, params, context: ProcessContext):
        items = list(context.inputs["subtomograms"])
        images = load_particle_images(items, context.resolve)
        rotations = np.array([s.particle.rotation_matrix for s in items])
        pixel, box = items[0].pixel_size_a, items[0].box_size_px
        paths = []
        for half in (0, 1):
            builder = Reconstructor(box)
            builder.add(images.data_ft[half::2], images.weight[half::2], rotations[half::2])
            paths.append(context.relative(write_mrc(
                context.output_path(f"half{half + 1}.mrc"), builder.reconstruct(epsilon=0.02),
                pixel)))
        return {"average": Average(name="oracle", path=paths[0], half1_path=paths[0],
                                   half2_path=paths[1], pixel_size_a=pixel, size_xyz=(box,) * 3,
                                   particle_count=len(items))}


register_protocol(OracleAverage)
