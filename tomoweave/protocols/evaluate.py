"""sim.score: score the results of several runs against the simulator's ground truth, side by side.

The point of a simulated dataset is to compare algorithms that solve the same problem: give this
protocol the tilt series of several alignment or CTF runs and the particles of several pickers,
and it reports, per tilt series, the reprojection error of each alignment, the defocus error of
each CTF estimate and the precision/recall/F1 of each picker, as a table (JSON) and a plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.engine import Input, InputError, ItemError, ProcessContext, Protocol, Task, param
from tomoweave.model import Particle, TiltSeries
from tomoweave.sim.metrics import alignment_errors, ctf_errors, picking_scores
from tomoweave.sim.truth import SeriesTruth, load_truth
from tomoweave.store.project_dir import atomic_write_text


class ScoreParams(BaseModel):
    hit_distance_a: float = param(60.0, gt=0, unit="Å", help="a pick within this distance of a "
                                  "true centre is a hit (one-to-one matching)")
    template: str | None = param("4v4r", help="score picks against the particles of this "
                                 "template only (empty: all particles)")


class ScoreAgainstTruth(Protocol):
    """Compare alignments, CTF estimates and particle picks of several runs with the truth."""

    name = "sim.score"
    label = "Score against the simulation truth"
    Params = ScoreParams
    inputs = {
        "tilt_series": Input(TiltSeries, mapped=False, optional=True, multiple=True,
                             help="aligned and/or CTF-estimated series of simulated data"),
        "particles": Input(Particle, mapped=False, optional=True, multiple=True,
                           help="picked particles in tomograms of simulated data"),
    }
    outputs = {}

    def plan(self, params: ScoreParams, inputs: dict[str, Any]) -> list[Task]:
        series_runs = inputs.get("tilt_series", [])
        particle_runs = inputs.get("particles", [])
        if not series_runs and not particle_runs:
            raise InputError("sim.score needs --input tilt_series=RUN and/or particles=RUN")
        names = sorted({ts.name for run in series_runs for ts in run}
                       | {p.tomogram for run in particle_runs for p in run})
        tasks = []
        for name in names:
            payload = {
                "series": [{"run": run.run_name, "item": ts.model_dump(mode="json")}
                           for run in series_runs for ts in run if ts.name == name],
                "particles": [{"run": run.run_name,
                               "positions_a": [list(p.position_a) for p in run
                                               if p.tomogram == name]} for run in particle_runs],
            }
            tasks.append(Task(key=name, payload=payload))
        return tasks

    def process(self, payload: dict, params: ScoreParams, context: ProcessContext) -> dict:
        series = [(entry["run"], TiltSeries.model_validate(entry["item"]))
                  for entry in payload["series"]]
        truth = _find_truth(series, context, payload)
        scores: dict[str, dict] = {"alignment": {}, "ctf": {}, "picking": {}}
        for run_name, item in series:
            by_angle = _tilts_in_truth_order(item, truth)
            if any(t is not None and t.alignment for t in by_angle):
                scores["alignment"][run_name] = alignment_errors(
                    truth, [t.alignment if t is not None else None for t in by_angle])
            if any(t is not None and t.ctf for t in by_angle):
                scores["ctf"][run_name] = ctf_errors(
                    truth, [t.ctf if t is not None else None for t in by_angle])
        for entry in payload["particles"]:
            found = np.asarray(entry["positions_a"], dtype=float).reshape(-1, 3)
            offset_a = tomogram_offset_a(truth.particle_positions_a(params.template or None), found,
                                         params.hit_distance_a)
            result = picking_scores(truth, found - offset_a, params.hit_distance_a,
                                    params.template or None)
            scores["picking"][entry["run"]] = {**result, "tomogram_offset_a": offset_a.tolist()}
        atomic_write_text(context.output_path(f"{truth.name}_scores.json"),
                          json.dumps(scores, indent=2))
        _plot_scores(truth.name, scores, context.output_path(f"{truth.name}_scores.png"))
        for line in summary_lines(scores):
            context.log(f"{truth.name}: {line}")
        return {}


def tomogram_offset_a(true_a: np.ndarray, found_a: np.ndarray, tolerance_a: float,
                      search_a: float = 400.0) -> np.ndarray:
    """Translation of a reconstructed tomogram's frame relative to the truth's, from the picks.

    An alignment fixes the tomogram only up to a translation (its centre is a choice, e.g. the
    mean height of the gold beads), so picks are compared after removing the translation that
    best brings them onto true centres: the median displacement to the nearest true centre,
    taken first within ``search_a`` and then within ``tolerance_a`` of the current estimate.
    """
    from scipy.spatial import cKDTree

    if not len(true_a) or not len(found_a):
        return np.zeros(3)
    tree = cKDTree(true_a)
    offset = np.zeros(3)
    for radius in (search_a, 2 * tolerance_a, tolerance_a):
        distance, index = tree.query(found_a - offset)
        close = distance <= radius
        if close.sum() < 3:
            break
        offset = offset + np.median((found_a - offset)[close] - true_a[index[close]], axis=0)
    return offset


def summary_lines(scores: dict[str, dict]) -> list[str]:
    lines = [f"alignment {run}: {s['rms_px']:.2f} px RMS, tilt axis error "
             f"{s['z_rot_error_deg']:+.2f}°, tilt offset error {s['y_tilt_error_deg']:+.2f}°"
             for run, s in scores["alignment"].items()]
    lines += [f"CTF {run}: defocus RMS error {s['defocus_rms_a']:.0f} Å"
              for run, s in scores["ctf"].items()]
    lines += [f"picking {run}: precision {s['precision']:.2f}, recall {s['recall']:.2f}, "
              f"F1 {s['f1']:.2f} ({s['found_count']} picks, {s['true_count']} true; tomogram "
              f"offset {np.round(s['tomogram_offset_a'], 1).tolist()} Å)"
              for run, s in scores["picking"].items()]
    return lines


def _find_truth(series, context: ProcessContext, payload: dict) -> SeriesTruth:
    """The truth file the simulate protocol wrote beside the series' .mdoc."""
    mdocs = [item.mdoc_path for _, item in series if item.mdoc_path]
    if not mdocs:
        raise ItemError("no tilt series of this tomogram was given, or it was not simulated: "
                        "add --input tilt_series=RUN of a run on simulated data")
    mdoc = context.resolve(mdocs[0])
    path = Path(mdoc).parent / "truth" / f"{series[0][1].name}.json"
    if not path.is_file():
        raise ItemError(f"{path}: no ground truth here; sim.score works on data made by simulate")
    return load_truth(path)


def _tilts_in_truth_order(item: TiltSeries, truth: SeriesTruth) -> list:
    """The item's tilts matched to the truth's tilts by nominal angle (None where missing)."""
    remaining = {round(t.tilt_deg, 2): t for t in item.tilts if not t.excluded}
    return [remaining.get(round(t.nominal_tilt_deg, 2)) for t in truth.tilts]


def _plot_scores(name: str, scores: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, values) for key, values in scores.items() if values]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.4))
    axes = np.atleast_1d(axes)
    metric = {"alignment": ("rms_px", "reprojection error (px RMS)"),
              "ctf": ("defocus_rms_a", "defocus error (Å RMS)"),
              "picking": ("f1", "F1 (hit within tolerance)")}
    for axis, (key, values) in zip(axes, panels, strict=False):
        field, label = metric[key]
        runs = list(values)
        axis.bar(range(len(runs)), [values[r][field] for r in runs], color="#3b7dd8")
        axis.set_xticks(range(len(runs)), runs, rotation=20, ha="right", fontsize=8)
        axis.set_ylabel(label)
        axis.set_title(f"{name}: {key}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
