"""Pruning picked particles: consensus, duplicates, membrane normals, vesicles, filters.

Every protocol here works per tomogram: ``plan`` groups the particles by their tomogram, one
task each. Positions are Å from the tomogram centre, so sets picked at different binnings
compare directly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms import particle_pruning as pp
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
from tomoweave.formats.mrc import MrcError, read_mrc
from tomoweave.model import Particle, ParticleTable, Segmentation, as_particle_table


def _load(particles: Any) -> ParticleTable:
    """The payload's particles as a table (tables arrive as they are)."""
    return as_particle_table(particles)


class _PerTomogram(Protocol):
    """Base: one task per tomogram holding that tomogram's particles (a table slice)."""

    inputs = {"particles": Input(Particle, help="picked particles")}
    outputs = {"particles": Output(Particle, help="the particles kept")}

    def plan(self, params: Any, inputs: dict[str, Any]) -> list[Task]:
        groups = as_particle_table(inputs.get("particles", [])).by_tomogram()
        return [Task(key=name, payload={"particles": groups[name]}) for name in sorted(groups)]


# ----------------------------------------------------------------------------- consensus
class ConsensusParams(BaseModel):
    tolerance_a: float = param(50.0, gt=0, unit="Å", help="largest distance between particles "
                               "of different sets that count as the same particle")
    min_sets: int = param(2, ge=1, help="keep particles found by at least this many sets (K)")


class Consensus(Protocol):
    """Particles on which at least K of N picking runs agree, with agreement statistics."""

    name = "particles.consensus"
    label = "Consensus of pickers"
    description = ("Matches the particles of two or more picking runs within a tolerance "
                   "(mutual nearest neighbours) and keeps those found by at least K runs; each "
                   "kept particle is the average position, with the orientation and score of "
                   "its best-scoring member.")
    Params = ConsensusParams
    inputs = {"particles": Input(Particle, multiple=True, help="two or more picking runs")}
    outputs = {"particles": Output(Particle, help="particles found by at least K runs")}

    def plan(self, params: ConsensusParams, inputs: dict[str, Any]) -> list[Task]:
        sets = inputs.get("particles") or []
        if len(sets) < 2:
            raise InputError(f"particles: consensus needs at least two picking runs, got "
                             f"{len(sets)}")
        if params.min_sets > len(sets):
            raise InputError(f"min_sets {params.min_sets} exceeds the {len(sets)} runs given")
        tables = [as_particle_table(group) for group in sets]
        names = sorted({n for table in tables for n in table.tomogram_names()})
        return [Task(key=name, payload={"sets": [t.take(t.tomograms == name) for t in tables]})
                for name in names]

    def process(self, payload: dict, params: ConsensusParams,
                context: ProcessContext) -> dict[str, Any]:
        sets = [_load(records) for records in payload["sets"]]
        result = pp.consensus([s.positions_a for s in sets], params.tolerance_a, params.min_sets)
        best_rows, positions = [], []
        for group in result.groups:
            scores = [sets[s].scores[i] for s, i in group]
            scores = [-np.inf if np.isnan(v) else v for v in scores]
            best_rows.append(group[int(np.argmax(scores))])
            positions.append(np.mean([sets[s].positions_a[i] for s, i in group], axis=0))
        kept = ParticleTable.concat([sets[s].take([i]) for s, i in best_rows])
        if len(kept):
            kept = kept.with_columns(
                name=[f"{t}_c{index:04d}" for index, t in enumerate(kept.tomograms.tolist())],
                position_a=np.array(positions))
        stats = result.statistics
        context.log(f"sets of {stats['set_sizes']} particles; groups by number of sets "
                    f"agreeing {stats['groups_by_support']}; pairwise agreement "
                    f"{ {k: round(v, 3) for k, v in stats['pairwise_agreement'].items()} }; "
                    f"kept {len(kept)} (K = {params.min_sets})")
        name = next((group.tomograms[0] for group in sets if len(group)), "tomogram")
        context.output_path(f"{name}_consensus.json").write_text(
            json.dumps({k: v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}
                        for k, v in stats.items()}, indent=1))
        return {"particles": kept}


# ----------------------------------------------------------------------------- duplicates
class DuplicatesParams(BaseModel):
    distance_a: float = param(50.0, gt=0, unit="Å", help="particles closer than this merge")


class RemoveDuplicates(_PerTomogram):
    """Merge particles closer than a distance into one at their average position."""

    name = "particles.remove_duplicates"
    label = "Remove duplicates"
    description = ("Particles closer than a distance (transitively) are merged into one at "
                   "their score-weighted average position, keeping the best one's orientation.")
    Params = DuplicatesParams

    def process(self, payload: dict, params: DuplicatesParams,
                context: ProcessContext) -> dict[str, Any]:
        particles = _load(payload["particles"])
        scores = np.nan_to_num(particles.scores, nan=1.0)
        merged, members = pp.remove_duplicates(particles.positions_a, params.distance_a, scores)
        kept = particles.take([group[0] for group in members])
        if len(kept):
            kept = kept.with_columns(position_a=np.asarray(merged, dtype=float).reshape(-1, 3))
        context.log(f"{len(particles)} -> {len(kept)} particles "
                    f"({len(particles) - len(kept)} duplicates merged within "
                    f"{params.distance_a:g} Å)")
        return {"particles": kept}


# ----------------------------------------------------------------------------- normals
class NormalParams(BaseModel):
    tolerance_deg: float = param(20.0, ge=0, le=180, unit="°",
                                 help="largest angle between particle axis and membrane normal")
    ignore_polarity: bool = param(False, help="accept axes pointing against the normal too")
    neighbours: int = param(8, ge=3, help="neighbours used to estimate a normal when the "
                            "particle carries none")


class FilterNormal(_PerTomogram):
    """Keep particles whose axis (the reference Z, rotated) follows the membrane normal."""

    name = "particles.filter_normal"
    label = "Filter by membrane normal"
    description = ("Keeps oriented particles whose axis lies within a tolerance of the membrane "
                   "normal: the particle's own normal (from pick.membrane) or one estimated "
                   "from its neighbours on the same membrane.")
    Params = NormalParams

    def process(self, payload: dict, params: NormalParams,
                context: ProcessContext) -> dict[str, Any]:
        particles = _load(payload["particles"])
        normals = _normals(particles, params.neighbours)
        angles = pp.normal_angles_deg(particles.rotations, normals, params.ignore_polarity)
        keep = angles <= params.tolerance_deg
        kept = particles.with_columns(normal=normals).take(keep)
        context.log(f"kept {len(kept)} of {len(particles)} within "
                    f"{params.tolerance_deg:g}° of the normal (median angle "
                    f"{np.median(angles):.1f}°)")
        return {"particles": kept}


def _normals(particles: ParticleTable, neighbours: int) -> np.ndarray:
    """Each particle's stored normal, else one from the PCA of its membrane's particles."""
    normals = np.array(particles.normals, dtype=float)
    missing = np.isnan(normals).any(axis=1)
    membranes = particles.membrane_ids
    for membrane in np.unique(membranes[missing].astype(str)):
        indices = np.flatnonzero(missing & (membranes.astype(str) == membrane))
        if len(indices) < 3:
            label = "None" if membrane == "nan" else membrane.removesuffix(".0")
            raise ItemError(f"{particles.tomograms[0]}: membrane {label}: particles without "
                            "a normal need at least 3 neighbours to estimate one")
        normals[indices] = pp.normals_from_neighbours(particles.positions_a[indices],
                                                      neighbours=neighbours)
    return normals


# ----------------------------------------------------------------------------- vesicles
class VesicleParams(BaseModel):
    max_distance_a: float = param(60.0, gt=0, unit="Å",
                                  help="largest distance from the fitted ellipsoid")
    min_particles: int = param(12, ge=9, help="smallest group fitted; smaller ones are kept "
                               "as they are")


class FitVesicles(_PerTomogram):
    """Fit an ellipsoid to each membrane's particles and drop those far from its surface."""

    name = "particles.fit_vesicles"
    label = "Fit vesicles"
    description = ("Groups particles by membrane id (all of a tomogram when none), fits an "
                   "ellipsoid to each group (least squares, refitted without outliers) and drops "
                   "particles farther than a distance from its surface.")
    Params = VesicleParams

    def process(self, payload: dict, params: VesicleParams,
                context: ProcessContext) -> dict[str, Any]:
        particles = _load(payload["particles"])
        groups: dict[Any, list[int]] = defaultdict(list)
        for row, membrane in enumerate(particles.membrane_ids.tolist()):
            groups[None if membrane != membrane else int(membrane)].append(row)
        keep_rows = np.zeros(len(particles), dtype=bool)
        for membrane, rows in groups.items():
            members = particles.positions_a[rows]
            if len(rows) < params.min_particles:
                keep_rows[rows] = True
                continue
            keep, ellipsoid = pp.ellipsoid_inliers(members, params.max_distance_a)
            if ellipsoid is None:
                context.log(f"membrane {membrane}: no ellipsoid fits; its particles are kept")
                keep_rows[rows] = True
                continue
            keep_rows[np.asarray(rows)[keep]] = True
            context.log(f"membrane {membrane}: ellipsoid radii "
                        f"{np.round(ellipsoid.radii_a).tolist()} Å at "
                        f"{np.round(ellipsoid.centre_a).tolist()}; kept {int(keep.sum())} of "
                        f"{len(members)}")
        return {"particles": particles.take(keep_rows)}


# ----------------------------------------------------------------------------- filters
class FilterParams(BaseModel):
    min_score: float | None = param(None, help="drop particles scoring below this")
    max_score: float | None = param(None, help="drop particles scoring above this")
    region_min_a: tuple[float, float, float] | None = param(
        None, unit="Å", help="lower corner (x, y, z) of the region to keep")
    region_max_a: tuple[float, float, float] | None = param(
        None, unit="Å", help="upper corner (x, y, z) of the region to keep")
    mask_dilation_a: float = param(0.0, ge=0, unit="Å",
                                   help="grow the mask's labelled voxels by this distance")
    keep_inside_mask: bool = param(True, help="keep particles inside the mask (else outside)")


class FilterParticles(_PerTomogram):
    """Keep particles by score range, by a box region, or by a mask (segmentation)."""

    name = "particles.filter"
    label = "Filter particles"
    description = "Keeps particles by score, inside a box region, and inside (or outside) a mask."
    Params = FilterParams
    inputs = {"particles": Input(Particle, help="particles to filter"),
              "mask": Input(Segmentation, mapped=False, optional=True,
                            help="label volumes; non-zero voxels form the mask")}

    def process(self, payload: dict, params: FilterParams,
                context: ProcessContext) -> dict[str, Any]:
        particles = _load(payload["particles"])
        keep = np.ones(len(particles), dtype=bool)
        scores = particles.scores
        if params.min_score is not None:
            keep &= ~(scores < params.min_score)
        if params.max_score is not None:
            keep &= ~(scores > params.max_score)
        positions = particles.positions_a
        if params.region_min_a is not None or params.region_max_a is not None:
            low = params.region_min_a or (-np.inf,) * 3
            high = params.region_max_a or (np.inf,) * 3
            keep &= pp.inside_region(positions, low, high)
        masks = [m for m in context.inputs.get("mask") or []
                 if m.tomogram == particles.tomograms[0]]
        if masks:
            keep &= self._mask_test(positions, masks[0], params, context)
        context.log(f"kept {int(keep.sum())} of {len(particles)}")
        return {"particles": particles.take(keep)}

    @staticmethod
    def _mask_test(positions, mask_item: Segmentation, params: FilterParams, context):
        from scipy import ndimage

        try:
            labels, _ = read_mrc(context.resolve(mask_item.path))
        except MrcError as error:
            raise ItemError(f"mask {mask_item.name}: {error}") from None
        mask = labels != 0
        radius = params.mask_dilation_a / mask_item.pixel_size_a
        if radius >= 0.5:
            mask = ndimage.distance_transform_edt(~mask) <= radius
        inside = pp.inside_mask(positions, mask, mask_item.pixel_size_a)
        return inside if params.keep_inside_mask else ~inside
