"""Particles + alignment exported to RELION 5, IMOD, Warp and Dynamo and imported again reproject
onto the same 2D tilt-image positions (within 0.1 px), for even and odd tomogram/image sizes and
binning 1 and 4. RELION 5 and Warp files are also projected with each program's own formula
(from their sources) to check the exported numbers, not only the round trip."""

from pathlib import Path

import numpy as np
import pytest

from tomoweave.convert import ConvertOptions, load
from tomoweave.formats import dynamo, imod, relion5, warp
from tomoweave.formats import relion_particles as rp
from tomoweave.formats.imod_extra import read_imod_particles, write_imod_particles
from tomoweave.formats.star_io import star_table
from tomoweave.geometry import project_points_a, projection_matrices
from tomoweave.geometry.rotations import random_rotations, rotation_x, rotation_y, rotation_z
from tomoweave.model import Acquisition, Particle, TiltAlignment, TiltImage, TiltSeries

PIXEL_A = 2.0
TOLERANCE_PX = 0.1
SIZES = {  # (tomogram size at bin 1, tilt-image size); odd sizes stay odd after binning by 4
    "even": ((512, 480, 160), (512, 480)),
    "odd": ((509, 477, 165), (509, 477)),
}


def _series(image_size, seed) -> TiltSeries:
    rng = np.random.default_rng(seed)
    tilts = []
    for index, tilt in enumerate(np.arange(-60, 61, 6.0)):
        alignment = TiltAlignment(y_tilt_deg=tilt + rng.normal(0, 0.3),
                                  z_rot_deg=85.3 + rng.normal(0, 0.5),
                                  shift_x_a=rng.uniform(-40, 40), shift_y_a=rng.uniform(-40, 40))
        tilts.append(TiltImage(tilt_deg=float(tilt), acquisition_order=index,
                               pre_exposure_e_a2=3.0 * index, alignment=alignment,
                               nominal_defocus_a=30000.0))
    return TiltSeries(name="TS_01", acquisition=Acquisition(pixel_size_a=PIXEL_A,
                                                            tilt_axis_deg=85.3),
                      image_size_xy=image_size, tilts=tilts)


def _particles(tomo_size, seed) -> list[Particle]:
    rng = np.random.default_rng(seed)
    half = (np.asarray(tomo_size) // 2 - 20) * PIXEL_A
    positions = rng.uniform(-half, half, size=(30, 3))
    return [Particle(name=f"TS_01/{i}", tomogram="TS_01", position_a=tuple(p), rotation=r.tolist())
            for i, (p, r) in enumerate(zip(positions, random_rotations(30, rng), strict=True))]


def _image_pixels(series: TiltSeries, particles) -> np.ndarray:
    """(tilts, particles, 2) positions in tilt-image pixels from pixel 0."""
    matrices = projection_matrices([t.alignment for t in series.tilts])
    points = np.array([p.position_a for p in particles])
    centre = np.asarray(series.image_size_xy) // 2
    return np.stack([project_points_a(m, points) / series.pixel_size_a + centre for m in matrices])


def _relion5_own_projection(tilt_star: Path, tomograms_star: Path, particles_star: Path, image_size):
    """RELION 5's Tomogram::setProjectionMatrix applied to the written files (pixels)."""
    (entry,) = relion5.read_tomograms_star(tomograms_star)
    table = star_table(tilt_star, "TS_01")
    pixel = entry.acquisition.pixel_size_a
    s0 = np.eye(4)
    s0[:3, 3] = -np.array([int(n / 2) for n in entry.size_xyz])
    centred = star_table(particles_star, "particles")[list(rp.CENTRED)].to_numpy(float)
    voxels = centred / pixel + np.array([int(n / 2) for n in entry.size_xyz])  # getPosition
    result = []
    for _, row in table.iterrows():
        rotation = np.eye(4)
        rotation[:3, :3] = (rotation_z(row.rlnTomoZRot) @ rotation_y(row.rlnTomoYTilt)
                            @ rotation_x(row.rlnTomoXTilt))
        s1, s2 = np.eye(4), np.eye(4)
        s1[:2, 3] = [row.rlnTomoXShiftAngst / pixel, row.rlnTomoYShiftAngst / pixel]
        s2[:2, 3] = [int(image_size[0] / 2), int(image_size[1] / 2)]
        matrix = s2 @ s1 @ rotation @ s0
        homogeneous = np.concatenate([voxels, np.ones((len(voxels), 1))], axis=1)
        result.append((homogeneous @ matrix.T)[:, :2])
    return np.stack(result)


def _warp_own_projection(xml: Path, particles_star: Path, tomo_size, image_size, coord_pixel):
    """Warp's GetPositionInAllTilts (no local warping) applied to the written files (pixels)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(xml).getroot()
    angles = [float(v) for v in root.findtext("Angles").split()]
    axes = [float(v) for v in root.findtext("AxisAngle").split()]
    offx = [float(v) for v in root.findtext("AxisOffsetX").split()]
    offy = [float(v) for v in root.findtext("AxisOffsetY").split()]
    table = star_table(particles_star)
    physical = table[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(float)
    physical = physical * coord_pixel  # star_table columns are read-only (cached parse)
    volume_centre = np.asarray(tomo_size) * PIXEL_A / 2
    image_centre = np.asarray(image_size) * PIXEL_A / 2
    result = []
    for angle, axis, ox, oy in zip(angles, axes, offx, offy, strict=True):
        euler = (rotation_z(0) @ rotation_y(angle) @ rotation_z(-axis)).T  # Matrix3.Euler(0,a,-b)
        moved = (physical - volume_centre) @ euler.T
        result.append((moved[:, :2] + [ox, oy] + image_centre) / PIXEL_A)
    return np.stack(result)


@pytest.mark.parametrize("parity", ["even", "odd"])
@pytest.mark.parametrize("binning", [1, 4])
def test_reprojection_across_formats(tmp_path, parity, binning):
    tomo_size, image_size = SIZES[parity]
    series, particles = _series(image_size, seed=binning), _particles(tomo_size, seed=binning + 7)
    expected = _image_pixels(series, particles)
    binned_pixel = PIXEL_A * binning
    binned_size = tuple(n // binning for n in tomo_size)

    # RELION 5: tomograms.star + tilt-series STAR + particles STAR (centred Å)
    tomograms_star = relion5.write_relion5(tmp_path / "relion5", [series], tomo_size)
    rp.write_relion5_particles(tmp_path / "relion5" / "particles.star", particles,
                               series.acquisition)
    (r5_series,) = relion5.read_relion5(tomograms_star, image_size)
    r5_particles = rp.read_relion5_particles(tmp_path / "relion5" / "particles.star")
    assert np.abs(_image_pixels(r5_series, r5_particles) - expected).max() < TOLERANCE_PX
    own = _relion5_own_projection(tmp_path / "relion5" / "tilt_series" / "TS_01.star",
                                  tomograms_star, tmp_path / "relion5" / "particles.star",
                                  image_size)
    assert np.abs(own - expected).max() < TOLERANCE_PX

    # IMOD: .xf/.tlt/.xtilt (tilt-series pixels) + particle model on the binned tomogram
    folder = tmp_path / "imod"
    folder.mkdir()
    alignments = [t.alignment for t in series.tilts]
    imod.write_xf(folder / "TS_01.xf", imod.alignments_to_xf(alignments, PIXEL_A))
    imod.write_tilt_angles(folder / "TS_01.tlt", [a.y_tilt_deg for a in alignments])
    imod.write_tilt_angles(folder / "TS_01.xtilt", [a.x_tilt_deg for a in alignments])
    write_imod_particles(folder / "TS_01.mod", particles, binned_pixel, binned_size)
    (imod_series,) = load(folder / "TS_01.xf", ConvertOptions(pixel_size_a=PIXEL_A,
                                                              image_size_xy=image_size)).series
    imod_particles = read_imod_particles(folder / "TS_01.mod", binned_pixel, binned_size, "TS_01")
    assert np.abs(_image_pixels(imod_series, imod_particles) - expected).max() < TOLERANCE_PX

    # Warp: tilt-series XML (offsets in Å, Warp's N/2 centres) + particle STAR at the binning
    warp.write_warp_xml(tmp_path / "TS_01.xml", series, tomo_size)
    warp.write_warp_particles(tmp_path / "warp.star", particles, binned_pixel, tomo_size, PIXEL_A)
    warp_series = warp.read_warp_xml(tmp_path / "TS_01.xml", PIXEL_A, image_size, tomo_size)
    warp_particles = warp.read_warp_particles(tmp_path / "warp.star", binned_pixel, tomo_size,
                                              PIXEL_A)
    assert np.abs(_image_pixels(warp_series, warp_particles) - expected).max() < TOLERANCE_PX
    own = _warp_own_projection(tmp_path / "TS_01.xml", tmp_path / "warp.star", tomo_size,
                               image_size, binned_pixel)
    assert np.abs(own - expected).max() < TOLERANCE_PX

    # Dynamo: table on the binned tomogram (1-based voxels); the alignment travels as IMOD files
    dynamo.write_dynamo_table(tmp_path / "dynamo.tbl", particles, binned_pixel, binned_size)
    dynamo_particles = dynamo.read_dynamo_table(tmp_path / "dynamo.tbl", binned_pixel,
                                                binned_size, tmp_path / "dynamo.doc")
    assert np.abs(_image_pixels(imod_series, dynamo_particles) - expected).max() < TOLERANCE_PX
