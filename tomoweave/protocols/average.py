"""average.refine and average.initial_model: subtomogram averaging with gold-standard FSC.

Thin forms over ``algorithms/averaging``: the particle images come from any kind of
``Subtomogram`` (extracted, pseudo-subtomograms, imported), the refinement is
``refine.refine`` with its state checkpointed after every iteration (a run killed during
iteration k continues with iteration k after ``tomoweave resume``), and the outputs are an
``Average`` (map, half maps, mask, FSC), the map as a ``Volume`` (a reference for the next
run), and the subtomograms with their refined particles (rotation, shift_a, score, half_set).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, field_validator

from tomoweave.algorithms.averaging import initial_model, refine
from tomoweave.algorithms.averaging.halves import split_half_sets
from tomoweave.algorithms.averaging.particle_images import image_source
from tomoweave.engine import Input, InputError, ItemError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.mrc import MrcError, read_mrc
from tomoweave.geometry.symmetry import expand_rotations, parse_symmetry
from tomoweave.model import Average, Particle, Subtomogram, Volume
from tomoweave.protocols import average_outputs as outputs

CITATIONS = [
    "Scheres SHW, Chen S (2012) Prevention of overfitting in cryo-EM structure determination. "
    "Nat Methods 9:853-854",
    "Chen S et al. (2013) High-resolution noise substitution to measure overfitting and "
    "validate resolution in 3D structure determination by single particle electron "
    "cryomicroscopy. Ultramicroscopy 135:24-35",
    "Förster F et al. (2008) Classification of cryo-electron sub-tomograms using constrained "
    "correlation. J Struct Biol 161:276-286",
    "Bharat TAM, Scheres SHW (2016) Resolving macromolecular structures from electron "
    "cryo-tomography data using subtomogram averaging in RELION. Nat Protoc 11:2054-2065",
]
TASK_KEY = "refine"
INITIAL_MODELS = ("priors", "reference_free")


class SymmetryParams(BaseModel):
    particle_diameter_a: float = param(..., gt=0, unit="Å", help="particle diameter: "
                                       "masks, scoring sphere and the angular step it needs")
    symmetry: str = param("C1", help="point group: Cn, Dn, T, O or I (RELION's axes)")
    seed: int = param(0, ge=0, help="seed of the random phases and orientations")

    @field_validator("symmetry")
    @classmethod
    def _known(cls, value: str) -> str:
        parse_symmetry(value)
        return value.strip().upper()


class RefineParams(SymmetryParams):
    initial_resolution_a: float = param(40.0, gt=0, unit="Å", help="resolution of the "
                                        "starting references (phases random beyond it)")
    search: Literal["local", "global"] = param(
        "local", choices=list(refine.SEARCH_MODES), help="first iteration: local around the "
        "particles' orientations (priors) or global over the asymmetric unit")
    angular_step_deg: float = param(7.5, gt=0, le=30, unit="°", help="starting angular step "
                                    "(halved automatically as the resolution improves)")
    local_range_deg: float = param(20.0, gt=0, le=180, unit="°", help="range of the first "
                                   "local search around the priors")
    shift_range_a: float = param(30.0, ge=0, unit="Å", help="largest shift searched")
    binning_schedule: list[int] = param([1], help="binning of each stage, e.g. 4 2 1; the "
                                        "next stage starts when the current one converges")
    max_iterations: int = param(15, ge=1, le=200, help="most iterations in all")
    initial_model: Literal["priors", "reference_free"] = param(
        "priors", choices=list(INITIAL_MODELS), help="without a reference input: reconstruct "
        "from the particles' orientations, or reference-free from random ones")
    memory_gb: float = param(2.0, gt=0, unit="GB", help="cropped particle images kept in "
                             "memory between iterations")
    stream_every_n: int = param(0, ge=0, help="streaming: while the subtomograms input is "
                                "still growing, refine again each time this many new "
                                "particles have arrived (0: only once it is complete)")

    @field_validator("binning_schedule")
    @classmethod
    def _factors(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value):
            raise ValueError("binning_schedule: expected factors ≥ 1, e.g. [4, 2, 1]")
        return value


def particle_arrays(subtomograms: list[Subtomogram]) -> dict[str, np.ndarray]:
    """Rotations (N, 3, 3), shifts (N, 3) Å, positions (N, 3) Å and half sets of the items."""
    particles = [s.particle for s in subtomograms]
    return {"rotations": np.array([p.rotation_matrix for p in particles]),
            "shifts_a": np.array([p.shift_a or (0.0, 0.0, 0.0) for p in particles], float),
            "positions_a": np.array([p.position_a for p in particles], float),
            "half_sets": np.array([p.half_set or 0 for p in particles], dtype=np.int8)}


def half_sets_of(subtomograms: list[Subtomogram], arrays: dict[str, np.ndarray],
                 diameter_a: float, log) -> np.ndarray:
    """The particles' own half sets when every one has one, else split by tomogram region
    (particles closer than a diameter share a half). When touching particles chain through
    the whole field, the cut along X ignores the chains (logged)."""
    given = arrays["half_sets"]
    if np.all((given == 1) | (given == 2)) and len(set(given.tolist())) == 2:
        return given
    tomograms = [s.particle.tomogram for s in subtomograms]
    halves = split_half_sets(arrays["positions_a"], tomograms, diameter_a)
    if len(set(halves.tolist())) < 2:
        log(f"particles closer than {diameter_a:g} Å chain through the field: half sets cut "
            "along X without keeping touching particles together")
        halves = split_half_sets(arrays["positions_a"], tomograms, 0.0)
    return halves


def first_volume(inputs: dict[str, Any], name: str) -> dict | None:
    """The JSON of the one volume of an optional input, or None."""
    items = list(inputs.get(name) or [])
    return items[0].model_dump(mode="json") if items else None


def read_volume(context: ProcessContext, item: Volume, what: str) -> np.ndarray:
    try:
        volume, _ = read_mrc(context.resolve(item.path))
    except (MrcError, OSError, ValueError) as error:
        raise ItemError(f"{what} {item.name}: {item.path}: {error}") from None
    return volume


class AverageRefine(Protocol):
    """Gold-standard auto-refinement of subtomograms to an average with its FSC."""

    name = "average.refine"
    label = "Refine an average (gold standard)"
    description = (
        "Refines the particles' orientations and shifts against two independent half "
        "references (half sets split by tomogram region), scoring with each particle's 3D "
        "weight (missing wedge, CTF², dose), coarse to fine, local around priors or global, "
        "with a binning schedule; the mask-corrected FSC between the half maps gives the "
        "resolution at 0.143 and filters the next references. Every iteration is logged and "
        "checkpointed: `tomoweave resume` continues a killed run from the last iteration.")
    citations = CITATIONS
    Params = RefineParams
    stream_rerun_param = "stream_every_n"  # an early average, refined again as particles come
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="extracted, pseudo- or "
                                    "imported subtomograms (one box and pixel size)"),
              "reference": Input(Volume, mapped=False, optional=True, help="starting map "
                                 "(else made from the particles, see initial_model)"),
              "mask": Input(Volume, mapped=False, optional=True, help="soft solvent mask for "
                            "the final FSC (else automatic)")}
    outputs = {"average": Output(Average, help="map, half maps, mask and FSC"),
               "map": Output(Volume, help="the final map, as a reference for later runs"),
               "subtomograms": Output(Subtomogram, help="the subtomograms with refined poses, "
                                      "scores and half sets"),
               "particles": Output(Particle, help="the refined particles where they are "
                                   "(position + shift), for exports")}

    def plan(self, params: RefineParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = list(inputs.get("subtomograms") or [])
        if len(subtomograms) < 2:
            raise InputError(f"{self.name}: needs at least 2 subtomograms, got "
                             f"{len(subtomograms)}")
        first = subtomograms[0]
        for item in subtomograms:
            if item.box_size_px != first.box_size_px or not np.isclose(
                    item.pixel_size_a, first.pixel_size_a, rtol=1e-4):
                raise InputError(f"subtomogram {item.name}: box {item.box_size_px} px at "
                                 f"{item.pixel_size_a:g} Å differs from {first.name}'s "
                                 f"{first.box_size_px} px at {first.pixel_size_a:g} Å")
        for name in ("reference", "mask"):
            if len(inputs.get(name) or []) > 1:
                raise InputError(f"input '{name}' holds {len(inputs[name])} volumes: give one")
        return [Task(key=TASK_KEY, payload={
            "subtomograms": [s.model_dump(mode="json") for s in subtomograms],
            "reference": first_volume(inputs, "reference"), "mask": first_volume(inputs, "mask")},
            size=len(subtomograms))]

    def process(self, payload: dict, params: RefineParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload["subtomograms"]]
        source = image_source(subtomograms, context.resolve,
                              memory_budget_bytes=params.memory_gb * 1e9)
        settings = self._settings(params, payload, context, source.box_px)
        state = self._start(payload, params, settings, subtomograms, source, context)
        offset = state.iteration

        def progress(fraction: float, message: str) -> None:
            done = (state.iteration + fraction) / max(1, settings.max_iterations)
            context.progress(min(done, 0.99), message)

        def on_iteration(current: refine.RefineState) -> None:
            context.save_checkpoint(*current.to_checkpoint())

        result = refine.refine(source, state, settings, on_iteration=on_iteration,
                               progress=progress, log=context.log)
        context.log(f"final: {result.fsc.resolution_a:.2f} Å at FSC 0.143 after "
                    f"{result.state.iteration} iterations ({offset} before this attempt)")
        return self._outputs(result, subtomograms, params, context, source.pixel_size_a)

    @staticmethod
    def _settings(params: RefineParams, payload: dict, context: ProcessContext,
                  box_px: int) -> refine.RefineSettings:
        mask = None
        if payload.get("mask"):
            mask = read_volume(context, Volume.model_validate(payload["mask"]), "mask")
            if mask.shape != (box_px,) * 3:
                raise ItemError(f"mask {payload['mask']['name']}: shape {mask.shape[::-1]}, "
                                f"expected the particles' box {box_px}³")
        return refine.RefineSettings(
            particle_diameter_a=params.particle_diameter_a, symmetry=params.symmetry,
            initial_resolution_a=params.initial_resolution_a, search=params.search,
            angular_step_deg=params.angular_step_deg, local_range_deg=params.local_range_deg,
            shift_range_a=params.shift_range_a, max_iterations=params.max_iterations,
            binning_schedule=tuple(params.binning_schedule), mask=mask,
            n_threads=max(1, context.n_threads), seed=params.seed)

    def _start(self, payload, params: RefineParams, settings, subtomograms, source,
               context: ProcessContext) -> refine.RefineState:
        saved = context.load_checkpoint()
        if saved is not None:
            state = refine.RefineState.from_checkpoint(*saved)
            context.log(f"resumed from the checkpoint after iteration {state.iteration}")
            return state
        arrays = particle_arrays(subtomograms)
        halves = half_sets_of(subtomograms, arrays, params.particle_diameter_a, context.log)
        rotations, shifts = arrays["rotations"], arrays["shifts_a"]
        pixel, box = source.pixel_size_a, source.box_px
        if payload.get("reference"):
            item = Volume.model_validate(payload["reference"])
            reference = initial_model.from_volume(read_volume(context, item, "reference"),
                                                  item.pixel_size_a, pixel, box,
                                                  params.initial_resolution_a)
            context.log(f"reference {item.name} at {pixel:g} Å/px, {box}³")
        elif params.initial_model == "reference_free":
            reference, rotations, shifts = initial_model.reference_free(
                source, initial_model.ReferenceFreeSettings(
                    particle_diameter_a=params.particle_diameter_a, symmetry=params.symmetry,
                    final_resolution_a=params.initial_resolution_a,
                    start_resolution_a=1.5 * params.initial_resolution_a, seed=params.seed,
                    n_threads=settings.n_threads),
                progress=lambda f, m: context.progress(0.0, m))
            context.log("reference-free initial model from random orientations")
        else:
            reference = initial_model.from_orientations(
                source, rotations, shifts, symmetry=params.symmetry,
                resolution_a=params.initial_resolution_a)
            context.log("initial model from the particles' orientations")
        context.log(f"{source.count} particles: {int(np.sum(halves == 1))} in half 1, "
                    f"{int(np.sum(halves == 2))} in half 2")
        state = refine.initial_state(source, reference, halves, rotations, shifts, settings)
        context.save_checkpoint(*state.to_checkpoint())
        return state

    @staticmethod
    def _outputs(result: refine.RefineResult, subtomograms, params: RefineParams,
                 context: ProcessContext, pixel: float) -> dict[str, Any]:
        box = result.average.shape[0]
        paths = {"path": outputs.write_map(context, "average.mrc", result.average, pixel),
                 "half1_path": outputs.write_map(context, "half1.mrc", result.half_maps[0],
                                                 pixel),
                 "half2_path": outputs.write_map(context, "half2.mrc", result.half_maps[1],
                                                 pixel),
                 "mask_path": outputs.write_map(context, "mask.mrc", result.mask, pixel)}
        state = result.state
        average = outputs.average_item("average", paths, pixel, box, result.fsc,
                                       symmetry=params.symmetry,
                                       particle_count=len(subtomograms),
                                       iterations=state.history)
        title = f"average of {len(subtomograms)} particles"
        outputs.fsc_png(result.fsc, context.output_path(outputs.FSC_PNG), title)
        outputs.slices_png(result.average, context.output_path(outputs.SLICES_PNG), title)
        outputs.angles_png(state.rotations, context.output_path(outputs.ANGLES_PNG), title)
        if state.history:
            outputs.iterations_png(state.history, context.output_path(outputs.ITERATIONS_PNG),
                                   title)
        refined = outputs.refined_subtomograms(subtomograms, state.rotations, state.shifts_a,
                                               state.scores, state.half_sets)
        return {"average": average, "subtomograms": refined,
                "particles": outputs.refined_particles(refined),
                "map": outputs.map_volume("average", paths["path"], pixel, box,
                                          params.symmetry)}


class InitialModelParams(SymmetryParams):
    method: Literal["priors", "reference_free", "volume"] = param(
        "reference_free", choices=["priors", "reference_free", "volume"],
        help="priors: reconstruct at the particles' orientations; reference_free: from "
        "random orientations by stochastic refinement; volume: the reference input "
        "low-passed")
    resolution_a: float = param(40.0, gt=0, unit="Å", help="low-pass of the model")
    rounds: int = param(10, ge=1, le=200, help="reference_free: rounds of stochastic refinement")
    subset_size: int = param(48, ge=2, help="reference_free: particles searched per round")
    angular_step_deg: float = param(20.0, ge=5, le=45, unit="°",
                                    help="reference_free: step of the global search")


class AverageInitialModel(Protocol):
    """A starting reference for average.refine: from the particles' orientations, reference-free
    from random orientations, or an imported map low-passed."""

    name = "average.initial_model"
    label = "Initial model for averaging"
    description = (
        "Makes the starting map of a refinement without an external reference: the particles "
        "reconstructed at their picking orientations, or reference-free (random orientations, "
        "then rounds of stochastic global search on random subsets with the resolution "
        "rising); or brings an imported map to the particles' pixel size and box, low-passed "
        "(with a warning: a reference biases the result towards itself). Outputs the model "
        "and the subtomograms with the orientations it found (reference_free).")
    citations = CITATIONS[:1]
    Params = InitialModelParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="the particles"),
              "reference": Input(Volume, mapped=False, optional=True,
                                 help="map to low-pass (method volume)")}
    outputs = {"model": Output(Volume, help="the initial model"),
               "subtomograms": Output(Subtomogram, help="the subtomograms with the "
                                      "orientations of the model (reference_free)")}

    def plan(self, params: InitialModelParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = list(inputs.get("subtomograms") or [])
        if not subtomograms:
            raise InputError(f"{self.name}: the subtomograms input is empty")
        if params.method == "volume" and not inputs.get("reference"):
            raise InputError(f"{self.name}: method volume needs --input reference=RUN")
        return [Task(key="initial_model", payload={
            "subtomograms": [s.model_dump(mode="json") for s in subtomograms],
            "reference": first_volume(inputs, "reference")})]

    def process(self, payload: dict, params: InitialModelParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload["subtomograms"]]
        source = image_source(subtomograms, context.resolve)
        arrays = particle_arrays(subtomograms)
        rotations, shifts = arrays["rotations"], arrays["shifts_a"]
        pixel, box = source.pixel_size_a, source.box_px
        if params.method == "volume":
            item = Volume.model_validate(payload["reference"])
            model = initial_model.from_volume(read_volume(context, item, "reference"),
                                              item.pixel_size_a, pixel, box, params.resolution_a)
            context.log(f"warning: reference bias: the model is {item.name} low-passed to "
                        f"{params.resolution_a:g} Å; a refinement started from it can "
                        "reproduce its features; check the result against a reference-free "
                        "model")
        elif params.method == "priors":
            model = initial_model.from_orientations(source, rotations, shifts,
                                                    symmetry=params.symmetry,
                                                    resolution_a=params.resolution_a)
        else:
            model, rotations, shifts = initial_model.reference_free(
                source, initial_model.ReferenceFreeSettings(
                    particle_diameter_a=params.particle_diameter_a, symmetry=params.symmetry,
                    rounds=params.rounds, subset_size=params.subset_size,
                    start_resolution_a=1.5 * params.resolution_a,
                    final_resolution_a=params.resolution_a,
                    angular_step_deg=params.angular_step_deg, n_threads=max(1, context.n_threads),
                    seed=params.seed), progress=context.progress)
        path = outputs.write_map(context, "initial_model.mrc", model, pixel)
        outputs.slices_png(model, context.output_path(outputs.SLICES_PNG),
                           f"initial model ({params.method})")
        context.log(f"initial model ({params.method}) of {len(subtomograms)} particles, "
                    f"{box}³ at {pixel:g} Å/px, low-passed to {params.resolution_a:g} Å")
        refined = outputs.refined_subtomograms(subtomograms, rotations, shifts, None, None)
        return {"model": outputs.map_volume("initial_model", path, pixel, box, params.symmetry),
                "subtomograms": refined}


class ExpandParams(BaseModel):
    symmetry: str = param(..., help="point group of the average: Cn, Dn, T, O or I")

    @field_validator("symmetry")
    @classmethod
    def _known(cls, value: str) -> str:
        parse_symmetry(value)
        return value.strip().upper()


class SymmetryExpand(Protocol):
    """Symmetry expansion: one copy of every subtomogram per symmetry operator."""

    name = "average.symmetry_expand"
    label = "Symmetry-expand particles"
    description = ("Replaces every subtomogram by |G| copies whose rotations are R · op for "
                   "each operator op of the point group (RELION's axes): the same particle, "
                   "each copy attributing another asymmetric unit of the reference to it, for "
                   "focused classification or refinement of subunits. Copies keep the "
                   "particle's box, shift and half set (they share its density) and are named "
                   "NAME_sK.")
    Params = ExpandParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="refined subtomograms")}
    outputs = {"subtomograms": Output(Subtomogram, help="|G| copies of each")}

    def plan(self, params: ExpandParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = list(inputs.get("subtomograms") or [])
        if not subtomograms:
            raise InputError(f"{self.name}: the subtomograms input is empty")
        return [Task(key="expand", payload=[s.model_dump(mode="json") for s in subtomograms])]

    def process(self, payload: list, params: ExpandParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload]
        expanded = expand_rotations(particle_arrays(subtomograms)["rotations"], params.symmetry)
        copies = []
        for item, rotations in zip(subtomograms, expanded, strict=True):
            for index, rotation in enumerate(rotations):
                name = f"{item.name}_s{index + 1}"
                particle = Particle(**{**item.particle.model_dump(), "name": name,
                                       "rotation": rotation.tolist()})
                copies.append(item.model_copy(update={"name": name, "particle": particle}))
        context.log(f"{len(subtomograms)} subtomograms expanded by {params.symmetry} "
                    f"({expanded.shape[1]} operators) to {len(copies)}")
        return {"subtomograms": copies}
