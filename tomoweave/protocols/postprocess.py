"""post.sharpen, post.local_resolution, particles.filter_by_local_resolution, import.average.

Thin forms over ``algorithms/postprocess``: an ``Average`` with its half maps comes in, maps
(MRC), PNG plots and a post-processed ``Average`` (``resolution_a``, ``bfactor_a2``) go out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, model_validator

from tomoweave.algorithms.averaging.fsc import automatic_mask
from tomoweave.algorithms.postprocess import local_resolution as locres
from tomoweave.algorithms.postprocess.sharpen import WILSON_LIMIT_A, sharpen_half_maps
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
from tomoweave.model import Average, FscShell, Particle, Tomogram, Volume, particles_by_tomogram
from tomoweave.protocols import average_outputs, postprocess_outputs
from tomoweave.protocols.imports import expand_files

SHARPEN_CITATIONS = [
    "Rosenthal PB, Henderson R (2003) Optimal determination of particle orientation, absolute "
    "hand, and contrast loss in single-particle electron cryomicroscopy. J Mol Biol "
    "333:721-745",
    "Chen S et al. (2013) High-resolution noise substitution to measure overfitting and "
    "validate resolution in 3D structure determination by single particle electron "
    "cryomicroscopy. Ultramicroscopy 135:24-35",
]
LOCRES_CITATIONS = [
    "Cardone G, Heymann JB, Steven AC (2013) One number does not fit all: mapping local "
    "variations in resolution in cryo-EM reconstructions. J Struct Biol 184:226-236",
    "Vilas JL et al. (2020) MonoTomo: a tool for local resolution estimation in cryo-electron "
    "tomography. J Struct Biol 209:107404",
]
MASK_SOURCES = ("automatic", "average", "none")


def _one(inputs: dict[str, Any], name: str) -> dict | None:
    items = list(inputs.get(name) or [])
    if len(items) > 1:
        raise InputError(f"input '{name}' holds {len(items)} volumes: give one")
    return items[0].model_dump(mode="json") if items else None


def _mask_for(context: ProcessContext, average: Average, mask_item: dict | None, source: str,
              mean_map: np.ndarray, diameter_a: float | None, dilation_px: float,
              soft_px: float) -> np.ndarray | None:
    """The solvent mask: the mask input, else the average's, automatic, or none."""
    if mask_item is not None:
        return postprocess_outputs.mask_of(context, Volume(**mask_item), mean_map.shape)
    if source == "average" and average.mask_path:
        volume = Volume(name=f"{average.name} mask", path=average.mask_path,
                        pixel_size_a=average.pixel_size_a, size_xyz=average.size_xyz)
        return postprocess_outputs.mask_of(context, volume, mean_map.shape)
    if source == "none":
        return None
    box = mean_map.shape[0]
    diameter = diameter_a or 0.8 * box * average.pixel_size_a
    try:
        return automatic_mask(mean_map, average.pixel_size_a, diameter,
                              resolution_a=average.resolution_a, dilation_px=dilation_px,
                              soft_px=soft_px)
    except ValueError as error:
        raise ItemError(f"average {average.name}: automatic mask: {error}; give a mask input "
                        "or --set mask_source=none") from None


# ----------------------------------------------------------------------------- post.sharpen
class SharpenParams(BaseModel):
    mask_source: Literal["automatic", "average", "none"] = param(
        "automatic", choices=list(MASK_SOURCES), help="solvent mask when no mask input is "
        "given: automatic (threshold, dilation, cosine edge), the average's own, or none")
    particle_diameter_a: float | None = param(None, gt=0, unit="Å", help="automatic mask: "
                                              "the particle's diameter (default 0.8 × box)")
    mask_dilation_px: float = param(3.0, ge=0, unit="px", help="automatic mask: growth")
    mask_soft_px: float = param(4.0, gt=0, unit="px", help="automatic mask: cosine edge")
    bfactor_a2: float | None = param(None, unit="Å²", help="the map's B-factor to correct "
                                     "(positive); default: fitted on the Guinier plot (maps "
                                     "at 8 Å or better; coarser maps get none)")
    guinier_low_a: float | None = param(None, gt=0, unit="Å", help="lowest resolution of the "
                                        "Guinier fit (default 10 Å, or 1.5 × resolution)")
    guinier_high_a: float | None = param(None, gt=0, unit="Å", help="highest resolution of the "
                                         "Guinier fit (default: the resolution)")
    guinier_on: Literal["masked", "unmasked"] = param(
        "masked", choices=["masked", "unmasked"], help="fit the Guinier plot of the masked "
        "mean map, or of the unmasked one (RELION 3.1's choice, lower B with solvent noise)")
    fsc_weighting: bool = param(True, help="weight by sqrt(2 FSC / (1 + FSC))")
    seed: int = param(0, ge=0, help="seed of the phase randomisation")

    @model_validator(mode="after")
    def _range(self) -> SharpenParams:
        if (self.guinier_low_a is None) != (self.guinier_high_a is None):
            raise ValueError("guinier_low_a and guinier_high_a go together (or neither)")
        if self.guinier_low_a is not None and self.guinier_low_a <= self.guinier_high_a:
            raise ValueError(f"guinier_low_a {self.guinier_low_a:g} Å must exceed "
                             f"guinier_high_a {self.guinier_high_a:g} Å")
        return self


class Sharpen(Protocol):
    """Mask-corrected FSC, B-factor and the sharpened, low-passed map of an average."""

    name = "post.sharpen"
    label = "Sharpen an average"
    description = (
        "From the two half maps: a soft mask (automatic, the average's, or given), the FSC "
        "corrected for the mask by phase randomisation, the resolution at 0.143, the B-factor "
        "from a Guinier fit (automatic range or given), FSC weighting, and the sharpened map "
        "low-passed at the resolution; plots of the FSC curves and of the Guinier fit.")
    citations = SHARPEN_CITATIONS
    Params = SharpenParams
    inputs = {"average": Input(Average, help="averages with half maps"),
              "mask": Input(Volume, mapped=False, optional=True, help="soft solvent mask")}
    outputs = {"average": Output(Average, help="the sharpened average (path: sharpened map; "
                                 "resolution_a, bfactor_a2, corrected FSC)"),
               "map": Output(Volume, help="the sharpened map, masked")}

    def plan(self, params: SharpenParams, inputs: dict[str, Any]) -> list[Task]:
        mask = _one(inputs, "mask")
        return [Task(key=a.name, payload={"average": a.model_dump(mode="json"), "mask": mask})
                for a in inputs.get("average") or []]

    def process(self, payload: dict, params: SharpenParams,
                context: ProcessContext) -> dict[str, Any]:
        average = Average.model_validate(payload["average"])
        half1, half2 = postprocess_outputs.half_maps(context, average)
        pixel = average.pixel_size_a
        mask = _mask_for(context, average, payload["mask"], params.mask_source,
                         0.5 * (half1 + half2), params.particle_diameter_a,
                         params.mask_dilation_px, params.mask_soft_px)
        span = (None if params.guinier_low_a is None
                else (params.guinier_low_a, params.guinier_high_a))
        result = sharpen_half_maps(half1, half2, pixel, mask=mask, bfactor_a2=params.bfactor_a2,
                                   guinier_range_a=span, fsc_weighted=params.fsc_weighting,
                                   guinier_masked=params.guinier_on == "masked",
                                   seed=params.seed)
        fit = result.guinier
        how = (f"Guinier {fit.range_a[0]:.1f}…{fit.range_a[1]:.1f} Å, r = {fit.correlation:.3f}"
               if np.isfinite(fit.intercept) else "given" if params.bfactor_a2 is not None
               else f"no automatic B at worse than {WILSON_LIMIT_A:g} Å: give bfactor_a2")
        context.log(f"{average.name}: {result.resolution_a:.2f} Å at FSC 0.143, B "
                    f"{result.bfactor_a2:.1f} Å² ({how})")
        write = average_outputs.write_map
        paths = {"path": write(context, f"{average.name}_sharpened.mrc", result.sharpened, pixel)}
        if mask is not None:
            paths["mask_path"] = write(context, f"{average.name}_mask.mrc", mask, pixel)
            masked = write(context, f"{average.name}_sharpened_masked.mrc",
                           result.sharpened_masked, pixel)
        else:
            masked = paths["path"]
        average_outputs.fsc_png(result.fsc, context.output_path(f"{average.name}_fsc.png"),
                                average.name)
        postprocess_outputs.guinier_png(
            result, context.output_path(f"{average.name}_{postprocess_outputs.GUINIER_PNG}"),
            average.name)
        sharpened = average.model_copy(update={
            **paths, "fsc": [FscShell(**row) for row in result.fsc.curve_records()],
            "fsc_threshold": result.fsc.threshold, "resolution_a": result.resolution_a,
            "bfactor_a2": result.bfactor_a2})
        return {"average": Average.model_validate(sharpened.model_dump()),
                "map": Volume(name=average.name, path=masked, pixel_size_a=pixel,
                              size_xyz=average.size_xyz, symmetry=average.symmetry)}


# ----------------------------------------------------------------------------- local resolution
class LocalResolutionParams(BaseModel):
    window_px: int = param(20, ge=8, unit="px", help="edge of the moving window")
    step_px: int = param(4, ge=1, unit="px", help="spacing of the window centres")
    threshold: float = param(0.143, gt=0, lt=1, help="FSC threshold in each window")
    soft_px: float = param(3.0, gt=0, unit="px", help="soft edge of the window's sphere")
    use_mask: bool = param(True, help="averages: only inside the average's mask (or the mask "
                           "input)")


class LocalResolution(Protocol):
    """Local FSC in a moving soft window, from half maps or from even/odd tomograms."""

    name = "post.local_resolution"
    label = "Local resolution"
    description = (
        "The FSC of the two halves in a moving soft spherical window (blocres-like) gives a "
        "local-resolution map and a locally filtered map; from an average's half maps, or "
        "from tomograms' even/odd halves (a local-resolution tomogram and its histogram).")
    citations = LOCRES_CITATIONS
    Params = LocalResolutionParams
    inputs = {"average": Input(Average, optional=True, help="averages with half maps"),
              "tomograms": Input(Tomogram, optional=True, help="tomograms with even/odd halves"),
              "mask": Input(Volume, mapped=False, optional=True, help="averages: the region")}
    outputs = {"local_resolution": Output(Volume, help="local resolution (Å) per voxel, named "
                                          "after its average or tomogram; 0 outside the mask"),
               "filtered": Output(Volume, help="the map low-passed at its local resolution")}

    def plan(self, params: LocalResolutionParams, inputs: dict[str, Any]) -> list[Task]:
        mask = _one(inputs, "mask")
        tasks = [Task(key=a.name, payload={"average": a.model_dump(mode="json"), "mask": mask})
                 for a in inputs.get("average") or []]
        for tomogram in inputs.get("tomograms") or []:
            if not tomogram.even_path or not tomogram.odd_path:
                raise InputError(f"tomogram {tomogram.name}: even_path and odd_path are needed "
                                 "(reconstruct with even/odd halves)")
            tasks.append(Task(key=tomogram.name,
                              payload={"tomogram": tomogram.model_dump(mode="json")}))
        if not tasks:
            raise InputError(f"{self.name}: give an average or tomograms with even/odd halves")
        return tasks

    def process(self, payload: dict, params: LocalResolutionParams,
                context: ProcessContext) -> dict[str, Any]:
        if "tomogram" in payload:
            item = Tomogram.model_validate(payload["tomogram"])
            read = postprocess_outputs.read_map
            half1 = read(context, item.even_path, f"tomogram {item.name} even_path")
            half2 = read(context, item.odd_path, f"tomogram {item.name} odd_path")
            if half1.shape != half2.shape:
                raise ItemError(f"tomogram {item.name}: even {half1.shape[::-1]} and odd "
                                f"{half2.shape[::-1]} differ in size")
            mask = None
        else:
            item = Average.model_validate(payload["average"])
            half1, half2 = postprocess_outputs.half_maps(context, item)
            mask = None
            if params.use_mask:
                mask = _mask_for(context, item, payload["mask"], "average", 0.5 * (half1 + half2),
                                 None, 3.0, 4.0) if (payload["mask"] or item.mask_path) else None
        pixel = item.pixel_size_a
        result = locres.local_resolution(half1, half2, pixel, window_px=params.window_px,
                                         step_px=params.step_px, threshold=params.threshold,
                                         mask=mask, soft_px=params.soft_px,
                                         progress=context.progress)
        filtered = locres.locally_filtered(0.5 * (half1 + half2), result.map_a, pixel)
        inside = result.map_a[result.map_a > 0]
        context.log(f"{item.name}: local resolution median {np.median(inside):.1f} Å, "
                    f"5–95 % {np.percentile(inside, 5):.1f}–{np.percentile(inside, 95):.1f} Å")
        postprocess_outputs.histogram_png(
            inside, context.output_path(f"{item.name}_{postprocess_outputs.HISTOGRAM_PNG}"),
            f"{item.name}: local resolution")
        postprocess_outputs.local_resolution_png(
            0.5 * (half1 + half2), result.map_a,
            context.output_path(f"{item.name}_{postprocess_outputs.LOCAL_RESOLUTION_PNG}"),
            f"{item.name}: local resolution (median {np.median(inside):.1f} Å)")
        write = average_outputs.write_map
        size = tuple(int(n) for n in half1.shape[::-1])
        return {"local_resolution": Volume(
                    name=item.name, path=write(context, f"{item.name}_locres.mrc", result.map_a,
                                               pixel), pixel_size_a=pixel, size_xyz=size),
                "filtered": Volume(
                    name=item.name, path=write(context, f"{item.name}_locres_filtered.mrc",
                                               filtered, pixel), pixel_size_a=pixel,
                    size_xyz=size)}


# ----------------------------------------------------------------------------- filter particles
class FilterLocalResolutionParams(BaseModel):
    max_resolution_a: float = param(..., gt=0, unit="Å", help="keep particles whose local "
                                    "resolution is this or better (smaller)")


class FilterByLocalResolution(Protocol):
    """Keep particles where the local-resolution tomogram is good enough."""

    name = "particles.filter_by_local_resolution"
    label = "Filter particles by local resolution"
    description = ("Reads each particle's local resolution (trilinear) in the local-resolution "
                   "tomogram of its tomogram (post.local_resolution of the even/odd halves) and "
                   "keeps those at max_resolution_a or better.")
    citations = LOCRES_CITATIONS[1:]
    Params = FilterLocalResolutionParams
    inputs = {"particles": Input(Particle, mapped=False, help="particles to filter"),
              "local_resolution": Input(Volume, mapped=False, help="local-resolution maps "
                                        "named after their tomograms")}
    outputs = {"particles": Output(Particle, help="the particles kept")}

    def plan(self, params: FilterLocalResolutionParams, inputs: dict[str, Any]) -> list[Task]:
        maps = {v.name: v.model_dump(mode="json") for v in inputs.get("local_resolution") or []}
        groups = particles_by_tomogram(list(inputs.get("particles") or []))
        missing = sorted(set(groups) - set(maps))
        if missing:
            raise InputError(f"local_resolution: no map named after tomogram(s) "
                             f"{', '.join(missing)} (maps: {', '.join(sorted(maps)) or 'none'})")
        return [Task(key=name, payload={"map": maps[name],
                                        "particles": [p.model_dump(mode="json") for p in group]})
                for name, group in groups.items()]

    def process(self, payload: dict, params: FilterLocalResolutionParams,
                context: ProcessContext) -> dict[str, Any]:
        volume = Volume.model_validate(payload["map"])
        values = postprocess_outputs.read_map(context, volume.path, f"local resolution "
                                              f"{volume.name}")
        particles = [Particle.model_validate(p) for p in payload["particles"]]
        positions = np.array([p.refined_position_a for p in particles], dtype=float)
        voxels_xyz = positions / volume.pixel_size_a + np.asarray(values.shape[::-1]) // 2
        local = locres.values_at_positions(values, voxels_xyz[:, ::-1])
        keep = (local > 0) & (local <= params.max_resolution_a)
        context.log(f"{volume.name}: kept {int(keep.sum())} of {len(particles)} particles at "
                    f"≤ {params.max_resolution_a:g} Å (median local resolution "
                    f"{np.median(local):.1f} Å)")
        return {"particles": [p for p, k in zip(particles, keep, strict=True) if k]}


# ----------------------------------------------------------------------------- import.average
class ImportAverageParams(BaseModel):
    files: list[str] = param(..., help="the two half maps (MRC): HALF1 HALF2")
    pixel_size_a: float | None = param(None, gt=0, unit="Å", help="pixel size (default: the "
                                       "MRC header's)")
    mask: str | None = param(None, help="a soft solvent mask (MRC) on the half maps' grid")
    name: str = param("average", help="name of the average")
    symmetry: str = param("C1", help="point group of the map")


class ImportAverage(Protocol):
    """Half maps made by another program as an Average (for post.* protocols)."""

    name = "import.average"
    label = "Import an average (half maps)"
    description = ("Brings two half maps (and optionally a mask) made by another program into "
                   "the project as an Average: copies of the files, and the mean of the halves "
                   "as its map.")
    Params = ImportAverageParams
    outputs = {"average": Output(Average, help="the imported average")}

    def plan(self, params: ImportAverageParams, inputs: dict[str, Any]) -> list[Task]:
        files = [str(f) for f in expand_files(params.files)]
        if len(files) != 2:
            raise InputError(f"import.average: expected two half maps (HALF1 HALF2), got "
                             f"{len(files)}: {' '.join(files)}")
        if params.mask:
            files.append(str(Path(params.mask).absolute()))
        return [Task(key=params.name, payload={"files": files})]

    def process(self, payload: dict, params: ImportAverageParams,
                context: ProcessContext) -> dict[str, Any]:
        volumes, pixels = [], []
        for path in payload["files"]:
            try:
                volume, header_pixel = read_mrc(path)
            except (MrcError, OSError, ValueError) as error:
                raise ItemError(f"{path}: {error}") from None
            volumes.append(np.asarray(volume, dtype=np.float32))
            pixels.append(params.pixel_size_a or header_pixel)
        shapes = {v.shape for v in volumes}
        if len(shapes) != 1 or len(set(volumes[0].shape)) != 1 or volumes[0].ndim != 3:
            raise ItemError("import.average: the half maps (and mask) must be cubes of one size, "
                            "got " + ", ".join(f"{p} {v.shape[::-1]}" for p, v in
                                               zip(payload["files"], volumes, strict=True)))
        pixel = pixels[0]
        if not pixel or pixel <= 0:
            raise ItemError(f"{payload['files'][0]}: the header has no pixel size; give "
                            "--pixel-size Å")
        write = average_outputs.write_map
        names = ("half1", "half2", "mask")
        paths = {f"{kind}_path": write(context, f"{params.name}_{kind}.mrc", volume, pixel)
                 for kind, volume in zip(names, volumes, strict=False)}
        paths["path"] = write(context, f"{params.name}.mrc", 0.5 * (volumes[0] + volumes[1]),
                              pixel)
        context.log(f"{params.name}: {volumes[0].shape[0]}³ at {pixel:g} Å/px"
                    + (", with a mask" if len(volumes) > 2 else ""))
        return {"average": Average(name=params.name, pixel_size_a=pixel,
                                   size_xyz=(volumes[0].shape[0],) * 3,
                                   symmetry=params.symmetry.strip().upper(), **paths)}
