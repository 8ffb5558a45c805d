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
from tomoweave.model import Particle, Segmentation, particles_by_tomogram


def _dump(particles: list[Particle]) -> list[dict]:
    return [p.model_dump(mode="json") for p in particles]


def _load(records: list[dict]) -> list[Particle]:
    return [Particle(**record) for record in records]


def _positions(particles: list[Particle]) -> np.ndarray:
    return np.array([p.position_a for p in particles], dtype=float).reshape(-1, 3)


class _PerTomogram(Protocol):
    """Base: one task per tomogram holding that tomogram's particles."""

    inputs = {"particles": Input(Particle, help="picked particles")}
    outputs = {"particles": Output(Particle, help="the particles kept")}

    def plan(self, params: Any, inputs: dict[str, Any]) -> list[Task]:
        groups = particles_by_tomogram(inputs.get("particles", []))
        return [Task(key=name, payload={"particles": _dump(groups[name])}) for name in sorted(groups)]


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
        names = sorted({p.tomogram for group in sets for p in group})
        return [Task(key=name, payload={"sets": [_dump([p for p in group if p.tomogram == name])
                                                 for group in sets]}) for name in names]

    def process(self, payload: dict, params: ConsensusParams,
                context: ProcessContext) -> dict[str, Any]:
        sets = [_load(records) for records in payload["sets"]]
        result = pp.consensus([_positions(s) for s in sets], params.tolerance_a, params.min_sets)
        kept = []
        for index, group in enumerate(result.groups):
            members = [sets[s][i] for s, i in group]
            best = max(members, key=lambda p: p.score if p.score is not None else -np.inf)
            position = np.mean([m.position_a for m in members], axis=0)
            kept.append(best.model_copy(update={
                "name": f"{best.tomogram}_c{index:04d}",
                "position_a": tuple(float(v) for v in position)}))
        stats = result.statistics
        context.log(f"sets of {stats['set_sizes']} particles; groups by number of sets "
                    f"agreeing {stats['groups_by_support']}; pairwise agreement "
                    f"{ {k: round(v, 3) for k, v in stats['pairwise_agreement'].items()} }; "
                    f"kept {len(kept)} (K = {params.min_sets})")
        name = next((group[0].tomogram for group in sets if group), "tomogram")
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
        scores = np.array([p.score if p.score is not None else 1.0 for p in particles])
        merged, members = pp.remove_duplicates(_positions(particles), params.distance_a, scores)
        kept = [particles[group[0]].model_copy(update={
            "position_a": tuple(float(v) for v in position)})
            for position, group in zip(merged, members, strict=True)]
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
        rotations = np.array([p.rotation_matrix for p in particles])
        angles = pp.normal_angles_deg(rotations, normals, params.ignore_polarity)
        kept = [p.model_copy(update={"normal": tuple(float(v) for v in n)})
                for p, n, a in zip(particles, normals, angles, strict=True)
                if a <= params.tolerance_deg]
        context.log(f"kept {len(kept)} of {len(particles)} within "
                    f"{params.tolerance_deg:g}° of the normal (median angle "
                    f"{np.median(angles):.1f}°)")
        return {"particles": kept}


def _normals(particles: list[Particle], neighbours: int) -> np.ndarray:
    """Each particle's stored normal, else one from the PCA of its membrane's particles."""
    normals = np.zeros((len(particles), 3))
    missing: dict[Any, list[int]] = defaultdict(list)
    for i, particle in enumerate(particles):
        if particle.normal is not None:
            normals[i] = particle.normal
        else:
            missing[particle.membrane_id].append(i)
    for membrane, indices in missing.items():
        if len(indices) < 3:
            raise ItemError(f"{particles[0].tomogram}: membrane {membrane}: particles without "
                            "a normal need at least 3 neighbours to estimate one")
        normals[indices] = pp.normals_from_neighbours(
            _positions([particles[i] for i in indices]), neighbours=neighbours)
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
        groups: dict[Any, list[Particle]] = defaultdict(list)
        for particle in particles:
            groups[particle.membrane_id].append(particle)
        kept: list[Particle] = []
        for membrane, members in groups.items():
            if len(members) < params.min_particles:
                kept.extend(members)
                continue
            keep, ellipsoid = pp.ellipsoid_inliers(_positions(members), params.max_distance_a)
            if ellipsoid is None:
                context.log(f"membrane {membrane}: no ellipsoid fits; its particles are kept")
                kept.extend(members)
                continue
            kept.extend(m for m, k in zip(members, keep, strict=True) if k)
            context.log(f"membrane {membrane}: ellipsoid radii "
                        f"{np.round(ellipsoid.radii_a).tolist()} Å at "
                        f"{np.round(ellipsoid.centre_a).tolist()}; kept {int(keep.sum())} of "
                        f"{len(members)}")
        return {"particles": kept}


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
        scores = np.array([np.nan if p.score is None else p.score for p in particles])
        if params.min_score is not None:
            keep &= ~(scores < params.min_score)
        if params.max_score is not None:
            keep &= ~(scores > params.max_score)
        positions = _positions(particles)
        if params.region_min_a is not None or params.region_max_a is not None:
            low = params.region_min_a or (-np.inf,) * 3
            high = params.region_max_a or (np.inf,) * 3
            keep &= pp.inside_region(positions, low, high)
        masks = [m for m in context.inputs.get("mask") or []
                 if m.tomogram == particles[0].tomogram]
        if masks:
            keep &= self._mask_test(positions, masks[0], params, context)
        context.log(f"kept {int(keep.sum())} of {len(particles)}")
        return {"particles": [p for p, k in zip(particles, keep, strict=True) if k]}

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
