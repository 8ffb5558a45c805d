"""ctf.consensus, align.consensus and average.compare on planted disagreements: the simulator's
true CTF and alignment against a copy with chosen tilts perturbed by known amounts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.fft
import sim_helpers  # noqa: F401  (registers test.attach_truth)
from pydantic import BaseModel

from tomoweave.algorithms.consensus import ctf_consensus_resolution_a
from tomoweave.algorithms.ctf_model import electron_wavelength_a
from tomoweave.algorithms.volumes import rotate_volume
from tomoweave.api import Project
from tomoweave.engine import Input, Output, ProcessContext, Protocol, param
from tomoweave.engine.registry import register_protocol
from tomoweave.formats.mrc import read_mrc
from tomoweave.geometry.rotations import rotation_z
from tomoweave.model import TiltSeries

SIM = {"preset": "tiny", "seed": 4}
CTF_TILTS, DEFOCUS_OFFSET_A = (2, 5), 3000.0
ALIGN_TILT, SHIFT_A = 3, (12.0, -16.0)


class PerturbParams(BaseModel):
    ctf_tilts: list[int] = param([], help="tilts whose defocus changes")
    defocus_offset_a: float = param(0.0, help="added to their defocus U and V")
    align_tilts: list[int] = param([], help="tilts whose alignment shifts")
    shift_xy_a: list[float] = param([0.0, 0.0], help="added to their shift")


class Perturb(Protocol):
    """Test helper: a copy of each series with planted CTF and alignment differences."""

    name = "test.perturb"
    Params = PerturbParams
    inputs = {"tilt_series": Input(TiltSeries)}
    outputs = {"tilt_series": Output(TiltSeries)}

    def process(self, item: TiltSeries, params: PerturbParams,
                context: ProcessContext) -> dict[str, Any]:
        series = item.model_copy(deep=True)
        for index in params.ctf_tilts:
            ctf = series.tilts[index].ctf
            series.tilts[index].ctf = ctf.model_copy(update={
                "defocus_u_a": ctf.defocus_u_a + params.defocus_offset_a,
                "defocus_v_a": ctf.defocus_v_a + params.defocus_offset_a})
        for index in params.align_tilts:
            alignment = series.tilts[index].alignment
            series.tilts[index].alignment = alignment.model_copy(update={
                "shift_x_a": alignment.shift_x_a + params.shift_xy_a[0],
                "shift_y_a": alignment.shift_y_a + params.shift_xy_a[1]})
        return {"tilt_series": series}


register_protocol(Perturb)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = Project.init(tmp_path_factory.mktemp("consensus") / "proj")
    simulated = project.run("simulate", params=SIM, executor="inline")
    assert simulated.state == "finished"
    truth = project.run("test.attach_truth", inputs={"tilt_series": simulated.name},
                        executor="inline", name="truth")
    planted = project.run("test.perturb", inputs={"tilt_series": "truth"}, executor="inline",
                          name="planted", params={
                              "ctf_tilts": list(CTF_TILTS), "defocus_offset_a": DEFOCUS_OFFSET_A,
                              "align_tilts": [ALIGN_TILT], "shift_xy_a": list(SHIFT_A)})
    assert truth.state == planted.state == "finished"
    return project


def _agreement(project, run):
    import json

    (series,) = project.items(run)
    return json.loads((project.root / run.folder / "outputs" /
                       f"{series.name}_agreement.json").read_text())["tilts"]


def test_ctf_consensus_flags_exactly_the_planted_tilts(project):
    run = project.run("ctf.consensus", inputs={"tilt_series": "truth", "other": "planted"},
                      params={"exclude_disagreeing": True}, executor="inline")
    assert run.state == "finished", run.record.error
    rows = _agreement(project, run)
    assert [r["tilt"] for r in rows if r["disagree"]] == list(CTF_TILTS)
    for row in rows:
        if row["tilt"] in CTF_TILTS:
            assert row["other_defocus_a"] - row["defocus_a"] == pytest.approx(DEFOCUS_OFFSET_A)
        else:
            assert row["relative_difference"] == 0.0 and row["consensus_resolution_a"] == \
                pytest.approx(2 * project.items(run)[0].pixel_size_a)
    (series,) = project.items(run)
    assert [i for i, t in enumerate(series.tilts) if t.excluded] == list(CTF_TILTS)
    outputs = project.root / run.folder / "outputs"
    assert f"{series.name}: {len(rows) - 2} of {len(rows)} tilts agree" in \
        (outputs / f"{series.name}_summary.txt").read_text()
    assert (outputs / f"{series.name}_ctf_consensus.png").stat().st_size > 5_000


def test_consensus_resolution_where_the_phases_part():
    """A pure defocus change δ shifts the phase by π λ δ f²: |Δχ| = π/2 at f = 1/√(2 λ δ)."""
    wavelength = electron_wavelength_a(300.0)
    a = {"defocus_u_a": 30000.0, "defocus_v_a": 30000.0}
    b = {"defocus_u_a": 31000.0, "defocus_v_a": 31000.0}
    expected = np.sqrt(2 * wavelength * 1000.0)
    found = ctf_consensus_resolution_a(a, b, pixel_size_a=1.0, samples=4096)
    assert found == pytest.approx(expected, rel=0.01)  # 4096 samples: 0.03 % steps at ~6 Å


def test_align_consensus_identical_and_planted(project):
    same = project.run("align.consensus", inputs={"tilt_series": "truth", "other": "truth"},
                       executor="inline", name="same")
    planted = project.run("align.consensus", inputs={"tilt_series": "truth", "other": "planted"},
                          executor="inline", name="shifted")
    assert same.state == planted.state == "finished"
    assert max(r["max_px"] for r in _agreement(project, same)) <= 0.1
    pixel = project.items(planted)[0].pixel_size_a
    rows = _agreement(project, planted)
    assert [r["tilt"] for r in rows if r["disagree"]] == [ALIGN_TILT]
    expected_px = np.hypot(*SHIFT_A) / pixel  # a shift moves every point by the same amount
    assert rows[ALIGN_TILT]["mean_px"] == pytest.approx(expected_px, rel=1e-6)
    assert rows[ALIGN_TILT]["max_px"] == pytest.approx(expected_px, rel=1e-6)
    assert all(r["max_px"] <= 0.1 for r in rows if r["tilt"] != ALIGN_TILT)


def test_report_shows_the_agreement_summaries(project):
    from tomoweave.report import write_report

    run = project.run("align.consensus", inputs={"tilt_series": "truth", "other": "planted"},
                      executor="inline", name="for-report")
    assert run.state == "finished"
    page = write_report(project).read_text()
    (series,) = project.items(run)
    summary = (project.root / run.folder / "outputs" / f"{series.name}_summary.txt").read_text()
    assert f"<pre class='summary'>{summary.strip()}</pre>" in page.replace("&#x27;", "'")
    assert f"disagreeing tilts: {series.tilts[ALIGN_TILT].tilt_deg:g}°" in summary


def test_average_compare_undoes_a_known_rotation_and_shift(project, tmp_path):
    from tomoweave.formats.mrc import write_mrc
    from tomoweave.sim.oracle import truth_map

    box, pixel = 32, 10.0
    truth = truth_map("4v4r", box, pixel)
    rng = np.random.default_rng(3)
    turned = rotate_volume(truth, rotation_z(4.0))
    spectrum = scipy.fft.rfftn(turned)
    kz, ky, kx = np.meshgrid(scipy.fft.fftfreq(box), scipy.fft.fftfreq(box),
                             scipy.fft.rfftfreq(box), indexing="ij")
    moved = scipy.fft.irfftn(spectrum * np.exp(-2j * np.pi * (kx * 1.5 - ky * 1.0)), s=turned.shape)
    names = {}
    for name, volume in (("first", truth), ("second", moved)):
        halves = [write_mrc(tmp_path / f"{name}_{h}.mrc", (volume + rng.normal(
            0, 0.02, volume.shape)).astype(np.float32), pixel) for h in (1, 2)]
        run = project.run("import.average", params={"files": [str(h) for h in halves],
                                                     "name": name}, executor="inline", name=name)
        assert run.state == "finished", run.record.error
        names[name] = run.name
    run = project.run("average.compare", inputs={"average": "first", "other": "second"},
                      params={"search_range_deg": 6.0, "search_step_deg": 2.0},
                      executor="inline")
    assert run.state == "finished", run.record.error
    import json

    record = json.loads((project.root / run.folder / "outputs" /
                         "compare_agreement.json").read_text())
    # the inverse of 4° about z, found on a 2° grid; the inverse of the (1.5, -1) px shift
    assert record["rotation_deg"] == pytest.approx(4.0, abs=1.5)
    assert np.hypot(*record["shift_voxels_xyz"][:2]) == pytest.approx(np.hypot(1.5, 1.0), abs=0.5)
    # after alignment the two noisy copies of one map agree nearly to Nyquist (20 Å)
    assert record["resolution_fsc05_a"] < 25.0
    (aligned,) = project.items(run, "aligned")
    assert np.corrcoef(read_mrc(project.root / aligned.path)[0].ravel(), truth.ravel())[0, 1] > 0.95
