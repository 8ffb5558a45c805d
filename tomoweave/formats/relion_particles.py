"""RELION particle STAR files: RELION 5 (centred Å) and RELION 3/4 (pixels from the corner).

Positions. RELION 5 writes ``rlnCenteredCoordinateX/Y/ZAngst``: Å from the tomogram centre, the
same quantity as ``Particle.position_a``, so they are copied. RELION 3/4 write
``rlnCoordinateX/Y/Z`` in pixels from voxel 0 of the tomogram at a given pixel size; the centre is
voxel ``N // 2`` (``geometry.pixels_to_centered_a``), so those need the tomogram size and pixel
size. ``rlnOriginX/Y/ZAngst`` (RELION 3.1+) is the shift of the particle from the coordinate that
refinement found, in the subtomogram frame: the particle is at
``coordinate − A_subtomogram @ origin`` (RELION's ParticleSet::getPosition); we write origin 0.

Orientations. ``rlnAngleRot/Tilt/Psi`` go through ``geometry.relion_zyz_to_matrix``. RELION 5
may also carry ``rlnTomoSubtomogramRot/Tilt/Psi`` (the frame the subtomogram was extracted in);
the particle's pose is then ``A_subtomogram @ A_angles`` (RELION's ``ParticleSet::getMatrix3x3``;
``getMatrix4x4`` maps the particle box into the tomogram with it, confirming that RELION's ``A``
turns the reference into the particle), which we compose on reading and never write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tomoweave.formats.star_io import (
    StarFormatError,
    numeric_column,
    read_star_blocks,
    require_columns,
    split_relion_image_name,
    write_star_blocks,
)
from tomoweave.geometry import (
    centered_a_to_pixels,
    matrices_to_relion_zyz,
    pixels_to_centered_a,
    relion_zyz_to_matrices,
)
from tomoweave.model import Acquisition, Particle, ParticleTable, as_particle_table
from tomoweave.model.particle_table import ParticleTableError

ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
SUBTOMO_ANGLES = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
           "rlnCenteredCoordinateZAngst")
CORNER = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ORIGIN = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")


def _particles_block(path: Path) -> tuple[str, pd.DataFrame, dict]:
    blocks = read_star_blocks(path)
    if "particles" in blocks:
        name = "particles"
    else:
        name = next((k for k, v in blocks.items() if isinstance(v, pd.DataFrame)
                     and any(c in v.columns for c in CENTRED + CORNER)), "")
    if not name:
        raise StarFormatError(f"{path.name}: no data_particles block with particle coordinates "
                              f"(_rlnCenteredCoordinateXAngst or _rlnCoordinateX)")
    return name, blocks[name], blocks


def read_relion5_particles(path: str | Path) -> ParticleTable:
    """Particles of a RELION 5 particles STAR (centred coordinates in Å)."""
    path = Path(path)
    block, table, _ = _particles_block(path)
    require_columns(table, ("rlnTomoName", *CENTRED), path, block,
                    "RELION 5 particle positions (Å from the tomogram centre)")
    centred = np.stack([numeric_column(table, c, path, block) for c in CENTRED], axis=1)
    return _particles(path, block, table, centred - star_origins(path, block, table))


def read_relion4_particles(
    path: str | Path,
    pixel_size_a: float | None = None,
    tomo_size_xyz: tuple[int, int, int] | Mapping[str, tuple[int, int, int]] | None = None,
) -> ParticleTable:
    """Particles of a RELION 3/4 STAR: ``rlnCoordinateX/Y/Z`` in pixels from the corner.

    ``pixel_size_a`` is the pixel size the coordinates are in (default: the optics table's
    rlnTomoTiltSeriesPixelSize, rlnImagePixelSize or rlnDetectorPixelSize); ``tomo_size_xyz`` the
    tomogram size in those pixels, one for all or one per rlnTomoName/rlnMicrographName.
    """
    path = Path(path)
    block, table, blocks = _particles_block(path)
    tomo_column = "rlnTomoName" if "rlnTomoName" in table.columns else "rlnMicrographName"
    require_columns(table, (tomo_column, *CORNER), path, block,
                    "particle positions in pixels from the tomogram corner")
    pixel = pixel_size_a or _optics_pixel_size(blocks)
    if not pixel:
        raise StarFormatError(f"{path.name}: no pixel size in data_optics; give the pixel size "
                              f"the coordinates are in (--pixel-size)")
    if tomo_size_xyz is None:
        raise StarFormatError(f"{path.name}: RELION 3/4 coordinates count from the tomogram "
                              f"corner; give the tomogram size (--tomo-size X Y Z)")
    corner = np.stack([numeric_column(table, c, path, block) for c in CORNER], axis=1)
    names = np.array([n.removesuffix(".tomostar") for n in table[tomo_column].astype(str)])
    centred = np.array([
        pixels_to_centered_a(p, _size_for(tomo_size_xyz, n, path), pixel)
        for p, n in zip(corner, names, strict=True)
    ]).reshape(-1, 3)
    return _particles(path, block, table.assign(rlnTomoName=names),
                      centred - star_origins(path, block, table))


def _particles(path: Path, block: str, table: pd.DataFrame,
               positions: np.ndarray) -> ParticleTable:
    rotations = star_rotations(path, block, table)
    names = table["rlnTomoName"].astype(str).to_numpy(dtype=object)
    ids = (table["rlnTomoParticleName"].astype(str).to_numpy(dtype=object)
           if "rlnTomoParticleName" in table.columns
           else np.array([f"{n}/{i + 1}" for i, n in enumerate(names)], dtype=object))
    columns = {"name": ids, "tomogram": names, "position_a": positions, "rotation": rotations}
    if "rlnClassNumber" in table.columns:
        columns["class_id"] = numeric_column(table, "rlnClassNumber", path, block).to_numpy()
    if "rlnMaxValueProbDistribution" in table.columns:
        columns["score"] = numeric_column(table, "rlnMaxValueProbDistribution", path,
                                          block).to_numpy()
    try:
        return ParticleTable(columns)
    except ParticleTableError as error:
        raise StarFormatError(f"{path.name}: data_{block}: {error}") from None


def star_rotations(path: Path, block: str, table: pd.DataFrame) -> np.ndarray:
    """``A_subtomogram @ A_angles`` per particle (RELION's ParticleSet::getMatrix3x3)."""
    rotations = np.repeat(np.eye(3)[None], len(table), axis=0)
    if any(c in table.columns for c in ANGLES):
        require_columns(table, ANGLES, path, block, "particle orientations")
        angles = np.stack([numeric_column(table, c, path, block) for c in ANGLES], axis=1)
        rotations = relion_zyz_to_matrices(angles)
    return _subtomogram_frames(path, block, table) @ rotations


def _subtomogram_frames(path: Path, block: str, table: pd.DataFrame) -> np.ndarray:
    frames = np.repeat(np.eye(3)[None], len(table), axis=0)
    if any(c in table.columns for c in SUBTOMO_ANGLES):
        require_columns(table, SUBTOMO_ANGLES, path, block, "the subtomogram frame")
        angles = np.stack([numeric_column(table, c, path, block) for c in SUBTOMO_ANGLES], axis=1)
        frames = relion_zyz_to_matrices(angles)
    return frames.reshape(-1, 3, 3)


def star_origins(path: Path, block: str, table: pd.DataFrame) -> np.ndarray:
    """Refined shifts in the tomogram frame: RELION stores them in the subtomogram frame and
    subtracts ``A_subtomogram @ origin`` (ParticleSet::getPosition)."""
    if not any(c in table.columns for c in ORIGIN):
        return np.zeros((len(table), 3))
    require_columns(table, ORIGIN, path, block, "the refined particle shifts")
    origins = np.stack([numeric_column(table, c, path, block) for c in ORIGIN], axis=1)
    return np.einsum("nij,nj->ni", _subtomogram_frames(path, block, table), origins)


def _optics_pixel_size(blocks: dict) -> float | None:
    optics = blocks.get("optics")
    if not isinstance(optics, pd.DataFrame):
        return None
    for column in ("rlnTomoTiltSeriesPixelSize", "rlnImagePixelSize", "rlnDetectorPixelSize"):
        if column in optics.columns:
            return float(optics[column].iloc[0])
    return None


def _size_for(sizes, name: str, path: Path) -> tuple[int, int, int]:
    if isinstance(sizes, Mapping):
        if name not in sizes:
            raise StarFormatError(f"{path.name}: no tomogram size for {name!r}")
        return tuple(sizes[name])
    return tuple(sizes)


def _angle_columns(particles: Sequence[Particle]) -> dict[str, np.ndarray]:
    angles = matrices_to_relion_zyz(as_particle_table(particles).rotations).reshape(-1, 3)
    return {column: angles[:, i] for i, column in enumerate(ANGLES)}


def _class_numbers(particles: ParticleTable) -> np.ndarray | None:
    """rlnClassNumber when any particle has a class (RELION's 1 for those without)."""
    classes = particles.class_ids
    if not np.isfinite(classes).any():
        return None
    return np.where(np.isfinite(classes) & (classes != 0), classes, 1).astype(int)


def _optics(pixel_size_a: float, voltage_kv: float, cs_mm: float, amplitude: float) -> pd.DataFrame:
    return pd.DataFrame([{"rlnOpticsGroup": 1, "rlnOpticsGroupName": "opticsGroup1",
                          "rlnVoltage": voltage_kv, "rlnSphericalAberration": cs_mm,
                          "rlnAmplitudeContrast": amplitude,
                          "rlnTomoTiltSeriesPixelSize": pixel_size_a}])


def relion5_optics(
    tomograms: Sequence[str], acquisitions: Acquisition | Mapping[str, Acquisition],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """RELION 5's optics table for particles of ``tomograms`` and each tomogram's group number.

    One group per tomogram, named after it, with its tilt series' voltage, Cs, amplitude contrast
    and pixel size: what RELION builds itself when a particle file has no optics
    (``ParticleSet::read``), and what it checks against tomograms.star
    (``Tomogram::validateParticleOptics`` refuses any difference).
    """
    names = list(dict.fromkeys(tomograms))
    rows, group_of = [], {}
    for group, name in enumerate(names, start=1):
        if isinstance(acquisitions, Acquisition):
            acquisition = acquisitions
        elif name in acquisitions:
            acquisition = acquisitions[name]
        else:
            raise ValueError(f"particles of tomogram {name!r}: no tilt series or tomogram of "
                             f"that name gives their voltage, Cs and pixel size")
        rows.append({"rlnOpticsGroup": group, "rlnOpticsGroupName": name,
                     "rlnVoltage": acquisition.voltage_kv,
                     "rlnSphericalAberration": acquisition.spherical_aberration_mm,
                     "rlnAmplitudeContrast": acquisition.amplitude_contrast,
                     "rlnTomoTiltSeriesPixelSize": acquisition.pixel_size_a})
        group_of[name] = group
    return pd.DataFrame(rows), group_of


def write_relion5_particles(
    path: str | Path, particles: Sequence[Particle],
    acquisitions: Acquisition | Mapping[str, Acquisition],
) -> None:
    """Write a RELION 5 particles STAR (general, optics, particles; centred Å, origin 0).

    ``acquisitions``: the acquisition of every particle's tilt series (one for all, or one per
    tomogram name); its pixel size is the tilt series' (RELION's rlnTomoTiltSeriesPixelSize),
    not the tomogram's. See ``relion5_optics``.
    """
    particles = as_particle_table(particles)
    tomograms = particles.tomograms
    optics, group_of = relion5_optics(particles.tomogram_names(), acquisitions)
    positions = particles.positions_a
    table = {"rlnTomoName": tomograms, "rlnTomoParticleName": particles.names}
    table.update({c: positions[:, i] for i, c in enumerate(CENTRED)})
    table.update(_angle_columns(particles))
    table.update({c: np.zeros(len(particles)) for c in ORIGIN})
    table["rlnOpticsGroup"] = pd.Series(tomograms).map(group_of).to_numpy(dtype=int)
    classes = _class_numbers(particles)
    if classes is not None:
        table["rlnClassNumber"] = classes
    write_star_blocks(path, {
        "general": {"rlnTomoSubTomosAre2DStacks": 1},
        "optics": optics,
        "particles": pd.DataFrame(table)})


def write_relion4_particles(
    path: str | Path, particles: Sequence[Particle], pixel_size_a: float,
    tomo_size_xyz: tuple[int, int, int] | Mapping[str, tuple[int, int, int]],
    voltage_kv: float = 300.0, cs_mm: float = 2.7, amplitude_contrast: float = 0.1,
    micrograph_suffix: str | None = None,
) -> None:
    """Write a RELION 3/4 particles STAR: pixel coordinates from the corner at ``pixel_size_a``.

    ``micrograph_suffix`` adds rlnMicrographName = tomogram + suffix (Warp names ``.tomostar``).
    """
    path = Path(path)
    particles = as_particle_table(particles)
    corner = np.array([
        centered_a_to_pixels(p.position_a, _size_for(tomo_size_xyz, p.tomogram, path),
                             pixel_size_a) for p in particles]).reshape(-1, 3)
    table = {"rlnTomoName": [p.tomogram for p in particles]}
    if micrograph_suffix is not None:
        table["rlnMicrographName"] = [p.tomogram + micrograph_suffix for p in particles]
    table.update({c: corner[:, i].tolist() for i, c in enumerate(CORNER)})
    table.update(_angle_columns(particles))
    table.update({c: [0.0] * len(particles) for c in ORIGIN})
    table["rlnOpticsGroup"] = [1] * len(particles)
    classes = _class_numbers(particles)
    if classes is not None:
        table["rlnClassNumber"] = classes
    optics = _optics(pixel_size_a, voltage_kv, cs_mm, amplitude_contrast)
    optics["rlnImagePixelSize"] = pixel_size_a
    write_star_blocks(path, {"optics": optics, "particles": pd.DataFrame(table)})


def read_relion_subtomograms(path: str | Path, particles: Sequence[Particle]) -> list:
    """Subtomograms named by ``rlnImageName`` (3D MRC volumes, with ``rlnCtfImage`` weights),
    for the particles read from the same STAR file in the same order.

    Files are looked for as written, relative to the STAR file and to up to four folders above
    it (RELION writes paths relative to its project). RELION 5's 2D pseudo-subtomogram stacks
    (``rlnTomoSubTomosAre2DStacks``) and files not found are skipped.
    """
    from tomoweave.formats.mrc import MrcError, mrc_header_info
    from tomoweave.model import Subtomogram

    path = Path(path)
    block, table, blocks = _particles_block(path)
    general = blocks.get("general")
    stacks_2d = isinstance(general, dict) and int(general.get("rlnTomoSubTomosAre2DStacks", 0))
    if "rlnImageName" not in table.columns or stacks_2d:
        return []
    base = path.resolve().parent
    pixel = _optics_pixel_size(blocks)
    subtomograms = []
    for row, particle in enumerate(particles):
        volume = find_relative_file(base, str(table["rlnImageName"].iloc[row]))
        if volume is None:
            continue
        try:
            info = mrc_header_info(volume)
        except MrcError:
            continue
        if len(info["shape"]) != 3:
            continue
        weight = (find_relative_file(base, str(table["rlnCtfImage"].iloc[row]))
                  if "rlnCtfImage" in table.columns else None)
        subtomograms.append(Subtomogram(
            name=particle.name, particle=particle, path=str(volume),
            weight_path=str(weight) if weight else None,
            pixel_size_a=info["pixel_size_a"] or pixel or 1.0, box_size_px=info["shape"][-1]))
    return subtomograms


def find_relative_file(base: Path, written: str) -> Path | None:
    written = split_relion_image_name(written)[1]
    candidate = Path(written)
    options = [candidate] if candidate.is_absolute() else [
        *(folder / candidate for folder in [base, *base.parents][:5])]
    return next((c for c in options if c.is_file()), None)
