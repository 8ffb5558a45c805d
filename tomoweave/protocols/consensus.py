"""Comparing two results of the same data: ctf.consensus, align.consensus, average.compare.

Each writes ``<name>_summary.txt`` (a few lines the report shows), ``<name>_agreement.json``
(every number) and a plot into its outputs. The numerics are in algorithms/consensus.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.consensus import (
    alignment_discrepancy_px,
    compare_maps,
    ctf_consensus_resolution_a,
    volume_points_a,
)
from tomoweave.algorithms.volumes import spherical_mask
from tomoweave.engine import (
    Input,
    InputError,
    ItemError,
    Output,
    ProcessContext,
    Protocol,
    Task,
    param,
)
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.geometry.projection import projection_matrices
from tomoweave.model import Average, TiltSeries, Volume
from tomoweave.protocols.motion import save_figure

CITATION_CTF_CONSENSUS = ("Marabini R, Carragher B, Chen S, et al. (2015) CTF Challenge: Result "
                          "summary. J Struct Biol 190:348-359")


def summary_files(context: ProcessContext, name: str, lines: list[str], record: dict) -> None:
    """``<name>_summary.txt`` (shown in the report) and ``<name>_agreement.json``."""
    context.output_path(f"{name}_summary.txt").write_text("\n".join(lines) + "\n")
    context.output_path(f"{name}_agreement.json").write_text(json.dumps(record, indent=1))
    for line in lines:
        context.log(line)


def _partner(item: TiltSeries, context: ProcessContext, what: str) -> TiltSeries:
    others = {s.name: s for s in context.inputs.get("other") or []}
    if item.name not in others:
        raise ItemError(f"{item.name}: no tilt series of that name in the other {what} "
                        f"(it has {', '.join(sorted(others)) or 'none'})")
    other = others[item.name]
    if len(other.tilts) != len(item.tilts):
        raise ItemError(f"{item.name}: {len(item.tilts)} tilts here, {len(other.tilts)} in "
                        f"the other {what}")
    return other


def _plot(path: Path, title: str, angles, panels: list[tuple[str, list, list[str]]],
          flagged: list[bool]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    angles = np.asarray(angles)
    bad = np.asarray(flagged, dtype=bool)
    for axis, (label, series, names) in zip(axes[0], panels, strict=True):
        for values, name, marker in zip(series, names, ("o-", "s--", "^:"), strict=False):
            values = np.asarray(values, dtype=float)
            axis.plot(angles, values, marker, ms=4, label=name)
            axis.plot(angles[bad], values[bad], "x", color="red", ms=9)
        axis.set_xlabel("tilt angle (°)")
        axis.set_ylabel(label)
        axis.legend(fontsize=8)
    figure.suptitle(title + (f" — {int(bad.sum())} tilts disagree (×)" if bad.any() else ""),
                    fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


# ------------------------------------------------------------------------------ ctf.consensus
class CtfConsensusParams(BaseModel):
    defocus_tolerance: float = param(0.05, gt=0, help="largest relative difference of the mean "
                                     "defocus (|ΔD| / mean D) for two estimates to agree")
    min_resolution_a: float = param(12.0, gt=0, unit="Å", help="the two CTFs must stay in phase "
                                    "(|Δχ| ≤ π/2) at least up to this resolution (or Nyquist)")
    exclude_disagreeing: bool = param(False, help="mark the tilts where they disagree excluded "
                                      "in the output series")


class CtfConsensus(Protocol):
    """Two CTF estimates of the same tilts: per-tilt defocus and resolution agreement."""

    name = "ctf.consensus"
    label = "CTF consensus of two estimates"
    description = ("Compares the CTF of every tilt in two runs (e.g. ctf.estimate and CTFFIND): "
                   "defocus difference and the resolution up to which the two CTFs stay in "
                   "phase; tilts beyond the tolerance are flagged, with a plot of both against "
                   "the tilt angle. The output is the first input's series (with the "
                   "disagreeing tilts excluded if asked).")
    citations = [CITATION_CTF_CONSENSUS]
    Params = CtfConsensusParams
    inputs = {"tilt_series": Input(TiltSeries, help="tilt series with one CTF estimate"),
              "other": Input(TiltSeries, mapped=False, help="the same series with another")}
    outputs = {"tilt_series": Output(TiltSeries, help="the first input's series")}

    def process(self, item: TiltSeries, params: CtfConsensusParams,
                context: ProcessContext) -> dict[str, Any]:
        other = _partner(item, context, "CTF estimate")
        microscope = {"voltage_kv": item.acquisition.voltage_kv,
                      "spherical_aberration_mm": item.acquisition.spherical_aberration_mm,
                      "amplitude_contrast": item.acquisition.amplitude_contrast}
        limit_a = max(params.min_resolution_a, 2.0 * item.pixel_size_a)  # at most Nyquist
        rows, flagged = [], []
        for index, (mine, theirs) in enumerate(zip(item.tilts, other.tilts, strict=True)):
            if mine.ctf is None or theirs.ctf is None:
                raise ItemError(f"{item.name}: tilt {index} ({mine.tilt_deg:g}°) has no CTF in "
                                f"{'this' if mine.ctf is None else 'the other'} run")
            a, b = mine.ctf.model_dump(), theirs.ctf.model_dump()
            mean_a = 0.5 * (a["defocus_u_a"] + a["defocus_v_a"])
            mean_b = 0.5 * (b["defocus_u_a"] + b["defocus_v_a"])
            relative = abs(mean_a - mean_b) / max(0.5 * (mean_a + mean_b), 1.0)
            resolution = ctf_consensus_resolution_a(a, b, pixel_size_a=item.pixel_size_a,
                                                    **microscope)
            disagree = relative > params.defocus_tolerance or resolution > limit_a
            rows.append({"tilt": index, "tilt_deg": mine.tilt_deg, "defocus_a": mean_a,
                         "other_defocus_a": mean_b, "relative_difference": relative,
                         "consensus_resolution_a": resolution, "disagree": disagree})
            flagged.append(disagree)
        out = item.model_copy(deep=True)
        if params.exclude_disagreeing:
            for tilt, bad in zip(out.tilts, flagged, strict=True):
                tilt.excluded = tilt.excluded or bad
        bad_angles = [f"{r['tilt_deg']:g}°" for r in rows if r["disagree"]]
        relative = [r["relative_difference"] for r in rows]
        resolutions = [r["consensus_resolution_a"] for r in rows]
        lines = [f"{item.name}: {len(rows) - len(bad_angles)} of {len(rows)} tilts agree "
                 f"(defocus within {100 * params.defocus_tolerance:g} %, in phase to "
                 f"{params.min_resolution_a:g} Å)",
                 f"median defocus difference {100 * np.median(relative):.1f} %, median "
                 f"consensus resolution {np.median(resolutions):.1f} Å",
                 f"disagreeing tilts: {', '.join(bad_angles) or 'none'}"]
        summary_files(context, item.name, lines, {"series": item.name, "tilts": rows})
        angles = [r["tilt_deg"] for r in rows]
        _plot(context.output_path(f"{item.name}_ctf_consensus.png"), f"{item.name}: CTF consensus",
              angles, [("defocus (µm)", [[r["defocus_a"] / 1e4 for r in rows],
                                         [r["other_defocus_a"] / 1e4 for r in rows]],
                        ["this run", "other run"]),
                       ("consensus resolution (Å)", [[r["consensus_resolution_a"] for r in rows]],
                        ["|Δχ| ≤ π/2 up to"])], flagged)
        return {"tilt_series": out}


# ---------------------------------------------------------------------------- align.consensus
class AlignConsensusParams(BaseModel):
    tolerance_px: float = param(1.0, gt=0, unit="px", help="largest mean discrepancy of "
                                "projected points for two alignments of a tilt to agree")
    thickness_a: float = param(2000.0, gt=0, unit="Å", help="thickness of the volume whose "
                               "points are projected (the tomogram's)")
    exclude_disagreeing: bool = param(False, help="mark the tilts where they disagree excluded "
                                      "in the output series")


class AlignConsensus(Protocol):
    """Two alignments of the same tilt series: per-tilt discrepancy of projected 3D points."""

    name = "align.consensus"
    label = "Alignment consensus of two runs"
    description = ("Projects a grid of 3D points filling the tomogram (image size × thickness) "
                   "with each run's projection model and measures, per tilt, how far apart "
                   "the two images of each point land (px); tilts beyond the tolerance are "
                   "flagged, with a plot against the tilt angle.")
    Params = AlignConsensusParams
    inputs = {"tilt_series": Input(TiltSeries, help="aligned tilt series"),
              "other": Input(TiltSeries, mapped=False, help="the same series aligned otherwise")}
    outputs = {"tilt_series": Output(TiltSeries, help="the first input's series")}

    def process(self, item: TiltSeries, params: AlignConsensusParams,
                context: ProcessContext) -> dict[str, Any]:
        other = _partner(item, context, "alignment")
        kept = [i for i, (a, b) in enumerate(zip(item.tilts, other.tilts, strict=True))
                if a.alignment is not None and b.alignment is not None]
        if not kept:
            raise ItemError(f"{item.name}: no tilt is aligned in both runs")
        nx, ny = item.image_size_xy
        if nx <= 0 or ny <= 0:
            raise ItemError(f"{item.name}: image size unknown ({nx} × {ny} px)")
        points = volume_points_a((nx * item.pixel_size_a, ny * item.pixel_size_a,
                                  params.thickness_a))
        distances = alignment_discrepancy_px(
            projection_matrices([item.tilts[i].alignment for i in kept]),
            projection_matrices([other.tilts[i].alignment for i in kept]), points,
            item.pixel_size_a)
        rows = [{"tilt": i, "tilt_deg": item.tilts[i].tilt_deg, "mean_px": float(d[0]),
                 "max_px": float(d[1]), "disagree": bool(d[0] > params.tolerance_px)}
                for i, d in zip(kept, distances, strict=True)]
        out = item.model_copy(deep=True)
        if params.exclude_disagreeing:
            for row in rows:
                out.tilts[row["tilt"]].excluded |= row["disagree"]
        bad_angles = [f"{r['tilt_deg']:g}°" for r in rows if r["disagree"]]
        lines = [f"{item.name}: {len(rows) - len(bad_angles)} of {len(rows)} tilts agree within "
                 f"{params.tolerance_px:g} px (mean over {len(points)} points)",
                 f"discrepancy: median {np.median(distances[:, 0]):.2f} px, largest "
                 f"{distances[:, 1].max():.2f} px",
                 f"disagreeing tilts: {', '.join(bad_angles) or 'none'}"]
        summary_files(context, item.name, lines, {"series": item.name, "tilts": rows})
        _plot(context.output_path(f"{item.name}_align_consensus.png"),
              f"{item.name}: alignment consensus", [r["tilt_deg"] for r in rows],
              [("discrepancy (px)", [[r["mean_px"] for r in rows], [r["max_px"] for r in rows]],
                ["mean", "largest"])], [r["disagree"] for r in rows])
        return {"tilt_series": out}


# ---------------------------------------------------------------------------- average.compare
class AverageCompareParams(BaseModel):
    search_range_deg: float = param(6.0, ge=0, unit="°", help="search rotations of the other "
                                    "map within this of the identity (0: shifts only)")
    search_step_deg: float = param(2.0, gt=0, unit="°", help="step of that search")
    mask_diameter_a: float | None = param(None, gt=0, unit="Å", help="soft spherical mask for "
                                          "the FSC (default: 90 % of the box)")


class AverageCompare(Protocol):
    """The FSC between two maps after aligning the second onto the first."""

    name = "average.compare"
    label = "Compare two averages"
    description = ("Aligns the second average onto the first (a local rotation search and the "
                   "best shift) and computes their FSC in a soft spherical mask: the "
                   "resolution at which two programs' averages of the same particles agree "
                   "(FSC 0.5 and 0.143), with a plot of the curve.")
    Params = AverageCompareParams
    inputs = {"average": Input(Average, mapped=False, help="the first average"),
              "other": Input(Average, mapped=False, help="the average to align onto it")}
    outputs = {"aligned": Output(Volume, help="the second average aligned onto the first")}

    def plan(self, params: AverageCompareParams, inputs: dict[str, Any]) -> list[Task]:
        for name in ("average", "other"):
            if len(inputs.get(name) or []) != 1:
                raise InputError(f"{name}: give exactly one average, got "
                                 f"{len(inputs.get(name) or [])}")
        (first,), (second,) = inputs["average"], inputs["other"]
        if first.size_xyz != second.size_xyz or not np.isclose(
                first.pixel_size_a, second.pixel_size_a, rtol=1e-3):
            raise InputError(f"averages {first.name} ({first.size_xyz} at {first.pixel_size_a:g}"
                             f" Å) and {second.name} ({second.size_xyz} at "
                             f"{second.pixel_size_a:g} Å) are not on the same grid")
        return [Task(key="compare", payload={})]

    def process(self, payload: dict, params: AverageCompareParams,
                context: ProcessContext) -> dict[str, Any]:
        (first,), (second,) = context.inputs["average"], context.inputs["other"]
        try:
            reference, _ = read_mrc(context.resolve(first.path))
            volume, _ = read_mrc(context.resolve(second.path))
        except MrcError as error:
            raise ItemError(str(error)) from None
        box, pixel = reference.shape[0], first.pixel_size_a
        diameter = params.mask_diameter_a or 0.9 * box * pixel
        mask = spherical_mask(box, min(0.5 * diameter / pixel, box / 2 - 3), 3.0)
        result = compare_maps(reference, volume, pixel, search_range_deg=params.search_range_deg,
                              search_step_deg=params.search_step_deg, mask=mask)
        angle = float(np.degrees(np.arccos(np.clip((np.trace(result.rotation) - 1) / 2, -1, 1))))
        lines = [f"{second.name} vs {first.name}: FSC 0.5 at {result.resolution_05_a:.1f} Å, "
                 f"0.143 at {result.resolution_0143_a:.1f} Å",
                 f"aligned by {angle:.1f}° and {np.linalg.norm(result.shift_voxels_xyz):.2f} px; "
                 f"correlation {result.correlation_before:.3f} -> {result.correlation_after:.3f}",
                 f"gold-standard resolutions: {first.name} {first.resolution_a or float('nan'):.1f}"
                 f" Å, {second.name} {second.resolution_a or float('nan'):.1f} Å"]
        record = {"first": first.name, "second": second.name,
                  "resolution_fsc05_a": result.resolution_05_a,
                  "resolution_fsc0143_a": result.resolution_0143_a,
                  "rotation_deg": angle, "shift_voxels_xyz": list(result.shift_voxels_xyz),
                  "fsc": [{"frequency_inv_a": float(f), "fsc": float(v)}
                          for f, v in zip(result.frequencies_inv_a, result.fsc, strict=True)]}
        summary_files(context, "compare", lines, record)
        self._plot_fsc(context, result, first.name, second.name)
        path = write_mrc(context.output_path(f"{second.name}_aligned.mrc"), result.aligned, pixel)
        return {"aligned": Volume(name=f"{second.name}_aligned", path=context.relative(path),
                                  pixel_size_a=pixel, size_xyz=first.size_xyz)}

    @staticmethod
    def _plot_fsc(context: ProcessContext, result, first: str, second: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.6))
        axis.plot(result.frequencies_inv_a, result.fsc, "o-", ms=3)
        for level in (0.5, 0.143):
            axis.axhline(level, color="grey", lw=0.8, ls="--")
        axis.set_xlabel("spatial frequency (1/Å)")
        axis.set_ylabel("FSC")
        axis.set_title(f"{second} vs {first}: FSC 0.5 at {result.resolution_05_a:.1f} Å",
                       fontsize=9)
        figure.tight_layout()
        save_figure(figure, context.output_path("compare_fsc.png"))
