"""The Average item and the refined-particle fields (issue 12, item 4): an Average made from a
real gold-standard FSC of two half maps, stored by a run, and shown by ``show --json`` with
``resolution_a``, the FSC as one record per shell with its ``resolution_a``, and the map paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tomoweave.algorithms import fourier
from tomoweave.algorithms.averaging.fsc import gold_standard_fsc
from tomoweave.algorithms.volumes import spherical_mask
from tomoweave.api import Project
from tomoweave.cli import app
from tomoweave.engine import Output, ProcessContext, Protocol, Task
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Average, FscShell, Particle

BOX, PIXEL_A = 32, 4.0


def _half_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth blob plus independent noise in each half: their FSC falls from 1 towards 0."""
    rng = np.random.default_rng(seed)
    signal = spherical_mask(BOX, 8.0, 3.0) * 10.0
    return tuple((signal + rng.standard_normal((BOX,) * 3)).astype(np.float32) for _ in (1, 2))


def _average(name: str, paths: dict[str, str]) -> Average:
    half1, half2 = _half_maps()
    fsc = gold_standard_fsc(half1, half2, PIXEL_A, spherical_mask(BOX, 12.0, 3.0))
    return Average(name=name, pixel_size_a=PIXEL_A, size_xyz=(BOX,) * 3,
                   fsc=[FscShell(**row) for row in fsc.curve_records()],
                   resolution_a=fsc.resolution_a, particle_count=10, symmetry="C1", **paths)


class MadeAverage(Protocol):
    """Test fixture: one Average with its maps written as MRC and a real FSC."""

    name = "test.made_average"
    outputs = {"averages": Output(Average)}

    def plan(self, params, inputs) -> list[Task]:
        return [Task(key="average", payload=None)]

    def process(self, item, params, context: ProcessContext) -> dict:
        half1, half2 = _half_maps()
        paths = {}
        for field, volume in (("path", half1 + half2), ("half1_path", half1),
                              ("half2_path", half2)):
            paths[field] = context.relative(write_mrc(context.output_path(f"{field}.mrc"),
                                                      volume, PIXEL_A))
        return {"averages": _average("made", paths)}


def test_fsc_records_carry_resolution_per_shell():
    average = _average("a", {"path": "map.mrc"})
    assert len(average.fsc) == BOX // 2 + 1
    for shell in average.fsc[1:]:
        assert shell.resolution_a == pytest.approx(1.0 / shell.frequency_inv_a)
        assert shell.frequency_inv_a == pytest.approx(shell.shell / (BOX * PIXEL_A))
        assert shell.fsc_phase_randomised is not None
    frequencies, curve = average.fsc_arrays()
    assert frequencies.shape == curve.shape == (BOX // 2 + 1,)
    # the reported resolution is where the stored curve crosses the threshold
    assert average.resolution_a == pytest.approx(
        fourier.resolution_at_threshold(curve, BOX, PIXEL_A, average.fsc_threshold))
    assert 2 * PIXEL_A < average.resolution_a < BOX * PIXEL_A
    again = Average.model_validate(json.loads(average.model_dump_json()))
    assert again == average


def test_show_json_gives_resolution_fsc_and_map_paths(tmp_path):
    register_protocol(MadeAverage)
    project = Project.init(tmp_path / "project")
    run = project.run(MadeAverage.name, executor="inline")
    assert run.state == "finished"
    result = CliRunner().invoke(app, ["show", f"{run.name}.averages", "-p",
                                      str(tmp_path / "project"), "--json"])
    assert result.exit_code == 0, result.output
    (shown,) = json.loads(result.output)["items"]
    assert shown["resolution_a"] == pytest.approx(project.items(run)[0].resolution_a)
    assert [row["shell"] for row in shown["fsc"]] == list(range(BOX // 2 + 1))
    assert shown["fsc"][4]["resolution_a"] == pytest.approx(BOX * PIXEL_A / 4)
    assert {"fsc", "fsc_unmasked", "fsc_masked", "fsc_phase_randomised"} <= set(shown["fsc"][4])
    for field in ("path", "half1_path", "half2_path"):
        assert (tmp_path / "project" / shown[field]).is_file()
    assert shown["pixel_size_a"] == PIXEL_A and shown["symmetry"] == "C1"


def test_refined_particle_fields():
    particle = Particle(name="p", tomogram="t", position_a=(10.0, -5.0, 2.0),
                        shift_a=(1.5, 0.5, -2.0), half_set=2)
    assert particle.refined_position_a == pytest.approx((11.5, -4.5, 0.0))
    plain = Particle(name="q", tomogram="t", position_a=(1.0, 2.0, 3.0))
    assert plain.shift_a is None and plain.half_set is None
    assert plain.refined_position_a == (1.0, 2.0, 3.0)
    with pytest.raises(ValidationError, match="half_set"):
        Particle(name="r", tomogram="t", position_a=(0, 0, 0), half_set=3)
    with pytest.raises(ValidationError, match="resolution_a"):
        Average(name="x", path="m.mrc", pixel_size_a=1.0, size_xyz=(8, 8, 8), resolution_a=-1.0)
