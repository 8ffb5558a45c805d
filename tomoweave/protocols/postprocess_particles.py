"""post.subtract and post.map_back: the average against the particles, and back into the cell.

post.subtract removes the (masked) average from every subtomogram at its refined pose with the
particle's own weight and a fitted amplitude (``algorithms.postprocess.subtract``); the results
are premultiplied subtomograms (RELION's convention rlnCtfDataAreCtfPremultiplied = 1).
post.map_back places the average — or, with several averages, average k for the particles of
class k — at every particle's refined position and rotation in a tomogram-sized volume
(``algorithms.postprocess.map_back``), with a ChimeraX script and a particle list for ArtiaX.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import scipy.fft
from pydantic import BaseModel

from tomoweave.algorithms.averaging.particle_images import load_particle_images
from tomoweave.algorithms.fourier import centred_grid_from_rfft
from tomoweave.algorithms.postprocess.map_back import MapBackMode, chimerax_script, place_copies
from tomoweave.algorithms.postprocess.subtract import subtract_from_particles
from tomoweave.algorithms.volumes import crop_or_pad, rescale_volume
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
from tomoweave.formats.relion_particles import write_relion4_particles
from tomoweave.model import Average, Particle, Subtomogram, Tomogram, Volume, particles_by_tomogram
from tomoweave.protocols import average_outputs, postprocess_outputs

SUBTRACT_CITATIONS = [
    "Bai XC, Rajendra E, Yang G, Shi Y, Scheres SHW (2015) Sampling the conformational space "
    "of the catalytic subunit of human γ-secretase. eLife 4:e11182",
]
MAP_BACK_CITATIONS = [
    "Ermel UH, Arghittu SM, Frangakis AS (2022) ArtiaX: an electron tomography toolbox for the "
    "interactive handling of sub-tomograms in UCSF ChimeraX. Protein Sci 31:e4472",
]
TASK_KEY = "subtract"


def _on_grid(volume: np.ndarray, from_pixel_a: float, to_pixel_a: float, box_px: int) -> np.ndarray:
    """A map resampled to another pixel size and centre-cropped or padded to ``box_px``."""
    return crop_or_pad(rescale_volume(volume, from_pixel_a, to_pixel_a), box_px)


def _single(inputs: dict[str, Any], name: str, kind: str) -> list:
    items = list(inputs.get(name) or [])
    if len(items) > 1:
        raise InputError(f"input '{name}' holds {len(items)} {kind}: give one")
    return items


# ----------------------------------------------------------------------------- post.subtract
class SubtractParams(BaseModel):
    fit_amplitude: bool = param(True, help="fit the average's amplitude to each particle "
                                "(least squares with the particle's weight), else 1")
    batch: int = param(64, ge=1, help="particles loaded at a time")


class Subtract(Protocol):
    """Subtract the (masked) average from each subtomogram at its refined pose."""

    name = "post.subtract"
    label = "Subtract the average from particles"
    description = (
        "Removes the average — only inside the mask, if one is given (e.g. the membrane) — "
        "from each subtomogram at its refined pose, with the particle's own CTF/wedge weight "
        "and an amplitude fitted per particle, so that the remainder holds what the mask "
        "excludes. Writes CTF-premultiplied subtomograms with their weights.")
    citations = SUBTRACT_CITATIONS
    Params = SubtractParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="subtomograms with refined "
                                    "poses (one box and pixel size)"),
              "average": Input(Average, mapped=False, help="the average whose map is "
                               "subtracted"),
              "mask": Input(Volume, mapped=False, optional=True, help="region of the average "
                            "to subtract (reference frame); default: all of it")}
    outputs = {"subtomograms": Output(Subtomogram, help="the remainders (premultiplied)")}

    def plan(self, params: SubtractParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = list(inputs.get("subtomograms") or [])
        if not subtomograms:
            raise InputError(f"{self.name}: no subtomograms")
        average = _single(inputs, "average", "averages")
        if not average:
            raise InputError(f"{self.name}: input 'average' is empty")
        mask = _single(inputs, "mask", "masks")
        return [Task(key=TASK_KEY, payload={
            "subtomograms": [s.model_dump(mode="json") for s in subtomograms],
            "average": average[0].model_dump(mode="json"),
            "mask": mask[0].model_dump(mode="json") if mask else None})]

    def process(self, payload: dict, params: SubtractParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload["subtomograms"]]
        average = Average.model_validate(payload["average"])
        box, pixel = subtomograms[0].box_size_px, subtomograms[0].pixel_size_a
        reference = _on_grid(postprocess_outputs.read_map(context, average.path,
                                                          f"average {average.name}"),
                             average.pixel_size_a, pixel, box)
        mask = None
        if payload["mask"]:
            item = Volume.model_validate(payload["mask"])
            mask = np.clip(_on_grid(postprocess_outputs.read_map(context, item.path,
                                                                 f"mask {item.name}"),
                                    item.pixel_size_a, pixel, box), 0.0, 1.0)
        written: list[Subtomogram] = []
        weights: dict[str, str] = {}
        scales_all: list[float] = []
        for start in range(0, len(subtomograms), params.batch):
            chunk = subtomograms[start:start + params.batch]
            try:
                images = load_particle_images(chunk, context.resolve)
            except ValueError as error:
                raise ItemError(str(error)) from None
            rotations = np.array([s.particle.rotation_matrix for s in chunk])
            shifts = np.array([s.particle.shift_a or (0.0, 0.0, 0.0) for s in chunk]) / pixel
            remainder, scales = subtract_from_particles(
                images.data_ft, images.weight, reference, rotations, shifts, mask=mask,
                fit_amplitude=params.fit_amplitude)
            scales_all.extend(scales.tolist())
            for index, item in enumerate(chunk):
                written.append(self._write(context, item, remainder[index],
                                           images.weight[index], weights, pixel))
            context.progress(len(written) / len(subtomograms),
                             f"{len(written)} of {len(subtomograms)} particles")
        scales_all = np.asarray(scales_all)
        context.log(f"subtracted {average.name} from {len(written)} particles"
                    f"{' inside the mask' if mask is not None else ''}; amplitude median "
                    f"{np.median(scales_all):.3g} (5–95 % {np.percentile(scales_all, 5):.3g}–"
                    f"{np.percentile(scales_all, 95):.3g})")
        return {"subtomograms": written}

    @staticmethod
    def _write(context: ProcessContext, item: Subtomogram, remainder_ft: np.ndarray,
               weight: np.ndarray, weights: dict[str, str], pixel: float) -> Subtomogram:
        box = item.box_size_px
        data = scipy.fft.irfftn(remainder_ft, s=(box,) * 3, workers=-1)
        path = average_outputs.write_map(context, f"{item.name}_subtracted.mrc", data, pixel)
        weight_path = item.weight_path
        if not item.ctf_premultiplied or weight_path is None:
            key = weight_path or "unit"
            if key not in weights:
                name = f"weight_{len(weights):05d}.mrc"
                weights[key] = average_outputs.write_map(
                    context, name, centred_grid_from_rfft(weight, box), pixel)
            weight_path = weights[key]
        return item.model_copy(update={"path": path,
                                       "weight_path": weight_path, "ctf_premultiplied": True})


# ----------------------------------------------------------------------------- post.map_back
class MapBackParams(BaseModel):
    mode: Literal["copy", "label"] = param("copy", choices=[m.value for m in MapBackMode],
                                           help="copy: the maps added; label: a label map "
                                           "(particle number, or class with several averages)")
    threshold: float | None = param(None, help="label mode: density above which a voxel "
                                    "belongs to a copy (default half the map's maximum)")
    level: float | None = param(None, help="contour level in the ChimeraX script (default: "
                                "the threshold, or half the map's maximum)")


class MapBack(Protocol):
    """Place the average (or each class's) at every particle's pose in its tomogram."""

    name = "post.map_back"
    label = "Map back into the tomograms"
    description = (
        "Places the average at every particle's refined position and rotation — with several "
        "averages, average k for the particles of class k — into a volume of the tomogram's "
        "size and pixel size: copies added, or a label map; with a ChimeraX .cxc script that "
        "overlays it on the tomogram and a RELION particle STAR that ArtiaX opens.")
    citations = MAP_BACK_CITATIONS
    Params = MapBackParams
    inputs = {"particles": Input(Particle, mapped=False, optional=True,
                                 help="particles with refined poses"),
              "subtomograms": Input(Subtomogram, mapped=False, optional=True,
                                    help="or subtomograms: their refined particles (what "
                                    "average.refine writes)"),
              "average": Input(Average, mapped=False, help="the average, or one per class"),
              "tomograms": Input(Tomogram, mapped=False, help="the tomograms (size, pixel)")}
    outputs = {"volumes": Output(Tomogram, help="one map-back volume per tomogram")}

    def plan(self, params: MapBackParams, inputs: dict[str, Any]) -> list[Task]:
        averages = [a.model_dump(mode="json") for a in inputs.get("average") or []]
        if not averages:
            raise InputError(f"{self.name}: input 'average' is empty")
        tomograms = {t.name: t.model_dump(mode="json") for t in inputs.get("tomograms") or []}
        particles = list(inputs.get("particles") or []) + [
            s.particle for s in inputs.get("subtomograms") or []]
        if not particles:
            raise InputError(f"{self.name}: give particles or subtomograms")
        groups = particles_by_tomogram(particles)
        missing = sorted(set(groups) - set(tomograms))
        if missing:
            raise InputError(f"tomograms: none named {', '.join(missing)} (the particles' "
                             f"tomograms; given: {', '.join(sorted(tomograms)) or 'none'})")
        if len(averages) > 1:
            for name, group in groups.items():
                bad = [p.name for p in group if not p.class_id or p.class_id > len(averages)]
                if bad:
                    raise InputError(f"{len(averages)} averages (one per class) but particle "
                                     f"{bad[0]} of {name} has class_id "
                                     f"{next(p.class_id for p in group if p.name == bad[0])}")
        return [Task(key=name, payload={"tomogram": tomograms[name], "averages": averages,
                                        "particles": [p.model_dump(mode="json") for p in group]})
                for name, group in groups.items()]

    def process(self, payload: dict, params: MapBackParams,
                context: ProcessContext) -> dict[str, Any]:
        tomogram = Tomogram.model_validate(payload["tomogram"])
        averages = [Average.model_validate(a) for a in payload["averages"]]
        particles = [Particle.model_validate(p) for p in payload["particles"]]
        pixel = tomogram.pixel_size_a
        shape = tuple(int(n) for n in tomogram.size_xyz[::-1])
        maps = [rescale_volume(postprocess_outputs.read_map(context, a.path, f"average {a.name}"),
                               a.pixel_size_a, pixel) for a in averages]
        label_mode = MapBackMode(params.mode) is MapBackMode.LABEL
        out = np.zeros(shape, np.int32 if label_mode else np.float32)
        classes = (np.ones(len(particles), int) if len(maps) == 1
                   else np.array([p.class_id for p in particles]))
        for k, volume in enumerate(maps, start=1):
            chosen = [p for p, c in zip(particles, classes, strict=True) if c == k]
            if not chosen:
                continue
            positions = np.array([p.refined_position_a for p in chosen]) / pixel
            rotations = np.array([p.rotation_matrix for p in chosen])
            labels = (np.full(len(chosen), k) if len(maps) > 1 else
                      np.array([particles.index(p) + 1 for p in chosen]))
            placed = place_copies(shape, volume, positions, rotations, mode=params.mode,
                                  threshold=params.threshold, labels=labels)
            out = np.where(placed != 0, placed, out) if label_mode else out + placed
        name = tomogram.name
        path = average_outputs.write_map(context, f"{name}_mapback.mrc", out, pixel)
        star = context.output_path(f"{name}_particles.star")
        refined = [p.model_copy(update={"position_a": p.refined_position_a}) for p in particles]
        write_relion4_particles(star, refined, pixel, tomogram.size_xyz)
        level = params.level if params.level is not None else (
            0.5 if label_mode else params.threshold or 0.5 * float(max(m.max() for m in maps)))
        tomogram_file = os.path.relpath(context.resolve(tomogram.path), star.parent)
        script = chimerax_script(tomogram_file, f"{name}_mapback.mrc", pixel, level=level,
                                 label_map=label_mode, particles_file=star.name)
        context.output_path(f"{name}_mapback.cxc").write_text(script)
        try:
            tomogram_map = postprocess_outputs.read_map(context, tomogram.path,
                                                        f"tomogram {name}")
        except ItemError:
            tomogram_map = None  # the picture goes without the tomogram
        postprocess_outputs.map_back_png(
            tomogram_map, out.astype(np.float32),
            context.output_path(f"{name}_{postprocess_outputs.MAP_BACK_PNG}"),
            f"{name}: {len(particles)} copies of {averages[0].name} ({params.mode})")
        context.log(f"{name}: {len(particles)} copies placed ({params.mode}); open "
                    f"{name}_mapback.cxc in ChimeraX, {star.name} in ArtiaX")
        return {"volumes": tomogram.model_copy(update={
            "path": path, "method": f"map back ({params.mode})", "even_path": None,
            "odd_path": None})}
