"""Conversions through the model: AreTomo -> IMOD against AreTomo's own IMOD files (API and CLI),
particle tables between Dynamo, RELION 5/4, EMAN2, copick and IMOD models."""

from pathlib import Path

import numpy as np
import pytest

from tomoweave.convert import ConversionError, ConvertOptions, convert, load
from tomoweave.formats import dynamo, relion_particles
from tomoweave.formats.imod import read_tilt_angles, read_xf
from tomoweave.geometry import rotation_angle_between_deg
from tomoweave.geometry.rotations import random_rotations
from tomoweave.model import Acquisition, Particle

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALN = DATA / "aretomo" / "global_no_local.aln"
MATRIX_TOL, SHIFT_TOL_PX = 1e-3, 0.02


def _check_against_aretomo(folder: Path) -> None:
    mine, theirs = read_xf(folder / "global_no_local.xf"), read_xf(ALN.with_suffix(".xf"))
    assert mine.shape == theirs.shape == (61, 2, 3)
    assert np.abs(mine[:, :, :2] - theirs[:, :, :2]).max() < MATRIX_TOL
    assert np.abs(mine[:, :, 2] - theirs[:, :, 2]).max() < SHIFT_TOL_PX
    tilts = read_tilt_angles(folder / "global_no_local.tlt")
    assert np.abs(tilts - read_tilt_angles(ALN.with_suffix(".tlt"))).max() < 1e-3


def test_aretomo_aln_to_imod_matches_aretomo_output(tmp_path):
    written = convert(ALN, "imod", tmp_path)
    assert tmp_path / "global_no_local.xf" in written
    _check_against_aretomo(tmp_path)


def test_aretomo_aln_to_imod_cli(tmp_path):
    from typer.testing import CliRunner

    from tomoweave.cli import app

    result = CliRunner().invoke(app, ["convert", str(ALN), "--to", "imod", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "global_no_local.xf" in result.stdout
    _check_against_aretomo(tmp_path)


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    from typer.testing import CliRunner

    from tomoweave.cli import app

    result = CliRunner().invoke(app, ["convert", str(ALN), "--to", "dynamo",
                                      "--out", str(tmp_path)])
    assert result.exit_code != 0
    message = result.stderr if hasattr(result, "stderr") else result.output
    assert message.strip().startswith("error:") and "particle table" in message
    assert len(message.strip().splitlines()) == 1


def _particles(count: int, seed: int, tomogram: str = "TS_01") -> list[Particle]:
    rng = np.random.default_rng(seed)
    rotations = random_rotations(count, rng)
    positions = rng.uniform([-900, -800, -200], [900, 800, 200], size=(count, 3))
    return [Particle(name=f"{tomogram}/{i}", tomogram=tomogram, position_a=tuple(p),
                     rotation=r.tolist(), class_id=1) for i, (p, r) in
            enumerate(zip(positions, rotations, strict=True))]


def _assert_same(before, after, pixel_size_a, position_tol_px=1e-3, angle_tol_deg=1e-3):
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert a.tomogram == b.tomogram
        error_px = np.abs(np.subtract(a.position_a, b.position_a)).max() / pixel_size_a
        assert error_px < position_tol_px
        assert rotation_angle_between_deg(a.rotation_matrix, b.rotation_matrix) < angle_tol_deg


@pytest.mark.parametrize("size", [(400, 380, 120), (401, 379, 121)])
def test_dynamo_to_relion5_and_back(tmp_path, size):
    pixel = 8.0
    particles = _particles(40, seed=sum(size))
    dynamo.write_dynamo_table(tmp_path / "in.tbl", particles, pixel, size)
    options = ConvertOptions(pixel_size_a=pixel, tomo_size_xyz=size)
    start = load(tmp_path / "in.tbl", options).particles
    _assert_same(particles, start, pixel)
    convert(tmp_path / "in.tbl", "relion5", tmp_path / "r5", options)
    convert(tmp_path / "r5" / "particles.star", "dynamo", tmp_path / "back", options)
    back = load(tmp_path / "back" / "particles.tbl", options).particles
    _assert_same(start, back, pixel)


@pytest.mark.parametrize("target", ["relion4", "eman", "copick", "imod", "warp"])
def test_particles_round_trip_other_formats(tmp_path, target):
    pixel, size = 6.0, (301, 300, 91)
    particles = _particles(25, seed=3)
    relion_particles.write_relion5_particles(tmp_path / "p.star", particles,
                                             Acquisition(pixel_size_a=pixel))
    options = ConvertOptions(pixel_size_a=pixel, tomo_size_xyz=size)
    written = convert(tmp_path / "p.star", target, tmp_path / target, options)
    source = next(p for p in written if p.suffix in (".star", ".json", ".mod")
                  and "config" not in p.name and "particle_parms" not in p.name)
    back = load(source, options).particles
    orientation_free = target in ("eman", "imod")  # boxes/models hold positions only
    for a, b in zip(particles, back, strict=True):
        assert np.abs(np.subtract(a.position_a, b.position_a)).max() / pixel < 1e-3
        if not orientation_free:
            assert rotation_angle_between_deg(a.rotation_matrix, b.rotation_matrix) < 1e-3


def test_missing_options_are_named(tmp_path):
    relion_particles.write_relion5_particles(tmp_path / "p.star", _particles(3, 1),
                                             Acquisition(pixel_size_a=5.0))
    with pytest.raises(ConversionError, match="--tomo-size"):
        convert(tmp_path / "p.star", "dynamo", tmp_path / "d", ConvertOptions(pixel_size_a=5.0))


def test_relion5_subtomogram_frame_and_origin_follow_particle_set(tmp_path):
    """RELION: pose = A_subtomogram @ A_angles, position = centred - A_subtomogram @ origin."""
    import pandas as pd

    from tomoweave.formats.star_io import write_star_blocks
    from tomoweave.geometry import relion_zyz_to_matrix

    table = pd.DataFrame({
        "rlnTomoName": ["TS_01"], "rlnCenteredCoordinateXAngst": [100.0],
        "rlnCenteredCoordinateYAngst": [-50.0], "rlnCenteredCoordinateZAngst": [20.0],
        "rlnAngleRot": [10.0], "rlnAngleTilt": [80.0], "rlnAnglePsi": [-30.0],
        "rlnTomoSubtomogramRot": [40.0], "rlnTomoSubtomogramTilt": [90.0],
        "rlnTomoSubtomogramPsi": [5.0], "rlnOriginXAngst": [3.0], "rlnOriginYAngst": [-2.0],
        "rlnOriginZAngst": [1.0], "rlnOpticsGroup": [1]})
    write_star_blocks(tmp_path / "p.star", {"particles": table})
    (particle,) = relion_particles.read_relion5_particles(tmp_path / "p.star")
    frame = relion_zyz_to_matrix(40.0, 90.0, 5.0)
    expected = frame @ relion_zyz_to_matrix(10.0, 80.0, -30.0)
    assert rotation_angle_between_deg(particle.rotation_matrix, expected) < 1e-6
    assert np.allclose(particle.position_a, np.array([100.0, -50.0, 20.0]) - frame @ [3, -2, 1])


def test_aln_dark_frames_stay_as_excluded_tilts(tmp_path):
    lines = ALN.read_text().splitlines()
    # the same alignment as if AreTomo had removed two dark frames from a 63-image stack
    lines[1] = "# RawSize = 4096 4096 63"
    lines.insert(3, "# DarkFrame =     0    0   -65.20")
    lines.insert(4, "# DarkFrame =    62    0    58.80")
    source = tmp_path / "dark.aln"
    source.write_text("\n".join(lines) + "\n")
    (series,) = load(source).series
    assert len(series.tilts) == 63
    assert [i for i, t in enumerate(series.tilts) if t.excluded] == [0, 62]
    assert series.tilts[0].tilt_deg == -65.2 and series.tilts[0].alignment is None
    assert series.tilts[1].alignment.y_tilt_deg == pytest.approx(-63.2)
    written = convert(source, "aretomo", tmp_path / "again")
    again = load(written[0]).series[0]
    assert [t.excluded for t in again.tilts] == [t.excluded for t in series.tilts]
    for a, b in zip(series.tilts, again.tilts, strict=True):
        if a.alignment is not None:
            assert b.alignment.shift_x_a == pytest.approx(a.alignment.shift_x_a, abs=1e-4)
            assert b.alignment.z_rot_deg == pytest.approx(a.alignment.z_rot_deg, abs=1e-4)
    convert(source, "imod", tmp_path / "imod")
    xf = read_xf(tmp_path / "imod" / "dark.xf")
    assert xf.shape == (63, 2, 3)  # IMOD needs a line per section, dark ones nominal
    assert np.abs(xf[1:62] - read_xf(ALN.with_suffix(".xf"))).max() < SHIFT_TOL_PX
