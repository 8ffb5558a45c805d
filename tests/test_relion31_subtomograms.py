"""RELION 3.1-style subtomogram STAR: import.subtomograms, export.relion31, and the real
RELION 3.1 (Debian's relion_reconstruct --3d_rot --ctf) reconstructing what we export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.fft

from tomoweave.algorithms import extraction
from tomoweave.algorithms.averaging.particle_images import load_particle_images
from tomoweave.algorithms.fourier import rfft_from_centred_grid
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.api import Project
from tomoweave.engine.errors import InputError
from tomoweave.formats.mrc import read_mrc, write_mrc
from tomoweave.formats.relion_subtomograms import write_relion31_subtomograms
from tomoweave.formats.star_io import read_star_blocks, write_star_blocks
from tomoweave.geometry.rotations import random_rotations
from tomoweave.model import Particle, Subtomogram
from tomoweave.sim.oracle import oracle_map, truth_map

BOX, PIXEL_A, COUNT = 32, 10.0, 40


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def star_folder(tmp_path_factory):
    """Plain subtomograms of a ribosome (rotated, × a signed 3D CTF: ±60° wedge and a CTF at
    2–4 µm) and a RELION 3.1 STAR naming them and their CTF images."""
    folder = tmp_path_factory.mktemp("relion31")
    rng = np.random.default_rng(5)
    reference = truth_map("4v4r", BOX, PIXEL_A)
    rotations = random_rotations(COUNT, rng)
    items = []
    for index, rotation in enumerate(rotations):
        ctf = extraction.weight_volume(BOX, PIXEL_A, (-60.0, 60.0),
                                       {"defocus_a": float(rng.uniform(20000, 40000))})
        particle_box = rotate_volume(reference, rotation)
        spectrum = scipy.fft.rfftn(particle_box) * rfft_from_centred_grid(ctf)
        observed = scipy.fft.irfftn(spectrum, (BOX,) * 3).astype(np.float32)
        observed += rng.normal(0, 0.02 * observed.std(), observed.shape).astype(np.float32)
        name = f"p{index:03d}"
        box_path = write_mrc(folder / "Subtomograms" / f"{name}.mrc", observed, PIXEL_A)
        ctf_path = write_mrc(folder / "Subtomograms" / f"{name}_ctf.mrc", ctf, PIXEL_A)
        particle = Particle(name=name, tomogram="TS_01", position_a=(10.0 * index, 0.0, 5.0),
                            rotation=rotation.tolist())
        items.append(Subtomogram(name=name, particle=particle, path=str(box_path),
                                 weight_path=str(ctf_path), pixel_size_a=PIXEL_A,
                                 box_size_px=BOX))
    write_relion31_subtomograms(folder / "particles.star", items, lambda p: p)
    return folder, reference, rotations


def test_star_has_the_relion_31_layout(star_folder):
    folder, _, rotations = star_folder
    blocks = read_star_blocks(folder / "particles.star")
    optics, particles = blocks["optics"], blocks["particles"]
    assert optics["rlnImageDimensionality"].iloc[0] == 3
    assert optics["rlnImagePixelSize"].iloc[0] == PIXEL_A
    assert optics["rlnCtfDataAreCtfPremultiplied"].iloc[0] == 0
    assert particles["rlnImageName"].iloc[0] == "Subtomograms/p000.mrc"  # relative to the STAR
    assert len(particles) == len(rotations)


@pytest.fixture(scope="module")
def project(star_folder, tmp_path_factory):
    folder, _, _ = star_folder
    project = Project.init(tmp_path_factory.mktemp("import31") / "proj")
    run = project.run("import.subtomograms", params={"files": [str(folder / "particles.star")]},
                      executor="inline", name="imported")
    assert run.state == "finished"
    return project


def test_import_gives_particle_images_with_the_priors(project, star_folder):
    _, reference, rotations = star_folder
    subtomograms = project.items("imported", "subtomograms")
    assert [s.name for s in subtomograms] == [f"p{i:03d}" for i in range(COUNT)]
    assert np.allclose(subtomograms[7].particle.rotation_matrix, rotations[7], atol=1e-5)
    assert subtomograms[3].particle.position_a == pytest.approx((30.0, 0.0, 5.0))
    assert len(project.items("imported", "particles")) == COUNT
    images = load_particle_images(subtomograms, project.path)
    # noise 2 % of the signal: the oracle map is the ribosome up to the CTF's lost shells
    assert _correlation(oracle_map(images, rotations), reference) > 0.9


@pytest.mark.skipif(shutil.which("relion_reconstruct") is None,
                    reason="RELION 3.1 (Debian package relion) not installed: make test installs it")
@pytest.mark.parametrize("premultiplied", [False, True])
def test_relion_31_reconstructs_what_we_export(project, star_folder, tmp_path, premultiplied):
    """relion_reconstruct --3d_rot --ctf of the exported STAR (plain subtomograms with their 3D
    CTF, or the same premultiplied with their CTF² weight) gives our oracle map."""
    _, reference, rotations = star_folder
    source = "imported"
    if premultiplied:
        source = _premultiplied_copy(project, tmp_path)
    out = tmp_path / "relion"
    run = project.run("export.relion31", inputs={"subtomograms": f"{source}.subtomograms"},
                      params={"out": str(out)}, executor="inline")
    assert run.state == "finished"
    subprocess.run(["relion_reconstruct", "--i", "particles.star", "--o", "rec.mrc",
                    "--3d_rot", "--ctf"], cwd=out, check=True, capture_output=True, timeout=600)
    relion_map, pixel = read_mrc(out / "rec.mrc")
    assert pixel == pytest.approx(PIXEL_A)
    ours = oracle_map(load_particle_images(project.items(source, "subtomograms"), project.path),
                      rotations)
    assert _correlation(relion_map, reference) > 0.85
    assert _correlation(relion_map, ours) > 0.9


def _premultiplied_copy(project, folder) -> str:
    """The imported subtomograms as CTF-premultiplied files, imported again (flag set)."""
    items = []
    for item in project.items("imported", "subtomograms"):
        images = load_particle_images([item], project.path)
        box = write_mrc(folder / "pre" / f"{item.name}.mrc", images.real_space(0), PIXEL_A)
        ctf_root = np.sqrt(read_mrc(project.path(item.weight_path))[0] ** 2)
        weight = write_mrc(folder / "pre" / f"{item.name}_ctf.mrc", ctf_root, PIXEL_A)
        items.append(item.model_copy(update={"path": str(box), "weight_path": str(weight),
                                             "ctf_premultiplied": True}))
    write_relion31_subtomograms(folder / "pre" / "particles.star", items, lambda p: p)
    run = project.run("import.subtomograms",
                      params={"files": [str(folder / "pre" / "particles.star")]},
                      executor="inline", name="premultiplied")
    assert run.state == "finished"
    imported = project.items(run, "subtomograms")
    assert imported[0].ctf_premultiplied
    return run.name


def _broken(folder, tmp_path, change) -> str:
    blocks = read_star_blocks(folder / "particles.star")
    blocks = change({k: v.copy() if isinstance(v, pd.DataFrame) else v for k, v in blocks.items()})
    path = tmp_path / "broken.star"
    for name in ("Subtomograms",):
        target = tmp_path / name
        if not target.exists():
            target.symlink_to(folder / name)
    write_star_blocks(path, blocks)
    return str(path)


def test_bad_input_names_the_file_and_the_field(project, star_folder, tmp_path):
    folder, _, _ = star_folder

    def missing(blocks):
        blocks["particles"].loc[2, "rlnImageName"] = "Subtomograms/gone.mrc"
        return blocks

    def other_box(blocks):
        small = write_mrc(tmp_path / "Small" / "ctf.mrc", np.ones((16,) * 3, np.float32),
                          PIXEL_A)
        blocks["particles"].loc[4, "rlnCtfImage"] = str(small)
        return blocks

    def no_pixel(blocks):
        blocks["optics"] = blocks["optics"].drop(columns=["rlnImagePixelSize"])
        return blocks

    cases = [(missing, r"broken.star: data_particles row 3: _rlnImageName "
                       r"Subtomograms/gone.mrc: file not found"),
             (other_box, r"broken.star: data_particles row 5: _rlnCtfImage ctf.mrc is 16³ but "
                         r"the subtomograms are 32³"),
             (no_pixel, r"broken.star: no pixel size: data_optics needs _rlnImagePixelSize")]
    for change, message in cases:
        star = _broken(folder, tmp_path, change)
        with pytest.raises(InputError, match=message) as raised:
            project.run("import.subtomograms", params={"files": [star]}, executor="inline")
        assert "\n" not in str(raised.value)


def test_cli_short_form(star_folder, tmp_path):
    folder, _, _ = star_folder
    command = [sys.executable, "-m", "tomoweave.cli"]
    subprocess.run([*command, "init", str(tmp_path / "p")], check=True, capture_output=True)
    done = subprocess.run([*command, "import", "subtomograms", str(folder / "particles.star"),
                           "-p", str(tmp_path / "p"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["state"] == "finished"
    assert record["outputs"]["subtomograms"]["count"] == COUNT
    bad = subprocess.run([*command, "import", "subtomograms", str(tmp_path / "none.star"),
                          "-p", str(tmp_path / "p")], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip() == f"error: {tmp_path / 'none.star'}: no such file"
