"""average.classify and average.mra: 3D classification and multi-reference alignment.

Thin forms over ``algorithms/classification/classes3d``: the particles are any ``Subtomogram``
set with its poses (e.g. the output of ``average.refine``); K classes start from K given
references or from k-means on the wedge-compensated principal components; every iteration is
checkpointed (``tomoweave resume`` continues with the next one). Outputs: the classes as a set
of ``Average`` items (map, half maps, FSC, occupancy — empty classes included) and the
subtomograms with their ``class_id`` (and, with alignment, their new poses).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, field_validator

from tomoweave.algorithms.averaging.particle_images import image_source
from tomoweave.algorithms.classification import classes3d
from tomoweave.engine import Input, InputError, ItemError, Output, ProcessContext, Protocol, Task, param
from tomoweave.geometry.symmetry import parse_symmetry
from tomoweave.model import Average, Subtomogram, Volume
from tomoweave.protocols import classify_outputs as outputs
from tomoweave.protocols.average import half_sets_of, particle_arrays, read_volume

CITATIONS = [
    "Scheres SHW et al. (2007) Disentangling conformational states of macromolecules in 3D-EM "
    "through likelihood optimization. Nat Methods 4:27-29",
    "Scheres SHW (2010) Classification of structural heterogeneity by maximum-likelihood "
    "methods. Methods Enzymol 482:295-320",
    "Förster F et al. (2008) Classification of cryo-electron sub-tomograms using constrained "
    "correlation. J Struct Biol 161:276-286",
    "Bharat TAM, Scheres SHW (2016) Resolving macromolecular structures from electron "
    "cryo-tomography data using subtomogram averaging in RELION. Nat Protoc 11:2054-2065",
]
TASK_KEY = "classify"


class ClassifyParams(BaseModel):
    classes: int = param(2, ge=1, le=50, help="number of classes K")
    particle_diameter_a: float = param(..., gt=0, unit="Å", help="particle diameter: "
                                       "scoring sphere and FSC mask")
    resolution_a: float = param(30.0, gt=0, unit="Å", help="highest resolution used by the "
                                "scores and the class references")
    max_iterations: int = param(15, ge=1, le=200, help="most iterations")
    symmetry: str = param("C1", help="point group of every class (RELION's axes)")
    seed: int = param(0, ge=0, help="seed of the k-means starts and random phases")
    memory_gb: float = param(2.0, gt=0, unit="GB", help="cropped particle images kept in "
                             "memory between iterations")

    @field_validator("symmetry")
    @classmethod
    def _known(cls, value: str) -> str:
        parse_symmetry(value)
        return value.strip().upper()


class AlignParams(BaseModel):
    angular_step_deg: float = param(5.0, gt=0, le=30, unit="°", help="step of the local "
                                    "search around each particle's pose")
    local_range_deg: float = param(10.0, ge=0, le=90, unit="°", help="range of the local "
                                   "search")
    shift_range_a: float = param(10.0, ge=0, unit="Å", help="largest shift searched around "
                                 "the current one")


class Classify3dParams(ClassifyParams, AlignParams):
    assignment: Literal["soft", "hard"] = param(
        "soft", choices=list(classes3d.ASSIGNMENTS), help="soft: maximum-likelihood posteriors "
        "(noise model per particle's CTF² weight); hard: each particle to its best class")
    alignment: Literal["none", "local"] = param(
        "none", choices=list(classes3d.ALIGNMENTS), help="keep the refined poses, or search "
        "locally around them for every class")


class MraParams(ClassifyParams, AlignParams):
    pass


class _ClassesProtocol(Protocol):
    """Shared plan/process of average.classify and average.mra."""

    citations = CITATIONS
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="aligned subtomograms "
                                    "(one box and pixel size), e.g. average.refine's"),
              "reference": Input(Volume, mapped=False, optional=True,
                                 help="K maps that seed the K classes (else k-means on the "
                                 "wedge-compensated principal components)")}
    outputs = {"classes": Output(Average, help="one average per class: map, half maps, FSC, "
                                 "resolution, occupancy"),
               "subtomograms": Output(Subtomogram, help="the subtomograms with class_id, pose "
                                      "and posterior (score)")}

    def plan(self, params: ClassifyParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = outputs.checked_subtomograms(self.name, inputs, 2 * params.classes)
        references = list(inputs.get("reference") or [])
        if references and len(references) != params.classes:
            raise InputError(f"input 'reference' holds {len(references)} volumes for "
                             f"{params.classes} classes: give one per class, or none")
        return [Task(key=TASK_KEY, payload={
            "subtomograms": [s.model_dump(mode="json") for s in subtomograms],
            "references": [r.model_dump(mode="json") for r in references]})]

    def settings(self, params, context: ProcessContext) -> classes3d.ClassifySettings:
        raise NotImplementedError

    def process(self, payload: dict, params, context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload["subtomograms"]]
        source = image_source(subtomograms, context.resolve,
                              memory_budget_bytes=params.memory_gb * 1e9)
        settings = self.settings(params, context)
        state = self._start(payload, params, settings, subtomograms, source, context)

        def progress(fraction: float, message: str) -> None:
            done = (state.iteration + fraction) / max(1, settings.max_iterations)
            context.progress(min(done, 0.99), message)

        def on_iteration(current: classes3d.ClassifyState) -> None:
            context.save_checkpoint(*current.to_checkpoint())

        result = classes3d.classify(source, state, settings, on_iteration=on_iteration,
                                    progress=progress, log=context.log)
        sizes = np.bincount(result.labels, minlength=settings.classes)
        context.log(f"{result.state.iteration} iterations; particles per class: "
                    f"{', '.join(str(int(n)) for n in sizes)}")
        for k in np.flatnonzero(sizes < 3):
            context.log(f"class {k + 1} holds {int(sizes[k])} particles: reported, not merged")
        return self._outputs(result, subtomograms, params, context, source.pixel_size_a)

    def _start(self, payload, params, settings, subtomograms, source,
               context: ProcessContext) -> classes3d.ClassifyState:
        saved = context.load_checkpoint()
        if saved is not None:
            state = classes3d.ClassifyState.from_checkpoint(*saved)
            context.log(f"resumed from the checkpoint after iteration {state.iteration}")
            return state
        arrays = particle_arrays(subtomograms)
        halves = half_sets_of(subtomograms, arrays, params.particle_diameter_a, context.log)
        references = None
        if payload["references"]:
            references = np.stack([self._reference(context, Volume.model_validate(r), source)
                                   for r in payload["references"]])
            context.log(f"{len(references)} references seed the classes")
        else:
            context.log("classes seeded by k-means on the wedge-compensated components")
        state = classes3d.initial_state(source, arrays["rotations"], arrays["shifts_a"],
                                        halves, settings, references)
        context.save_checkpoint(*state.to_checkpoint())
        return state

    @staticmethod
    def _reference(context: ProcessContext, item: Volume, source) -> np.ndarray:
        volume = read_volume(context, item, "reference")
        if volume.shape != (source.box_px,) * 3 or not np.isclose(
                item.pixel_size_a, source.pixel_size_a, rtol=1e-3):
            raise ItemError(f"reference {item.name}: {volume.shape[::-1]} at "
                            f"{item.pixel_size_a:g} Å, expected the particles' box "
                            f"{source.box_px}³ at {source.pixel_size_a:g} Å")
        return volume

    def _outputs(self, result: classes3d.ClassifyResult, subtomograms, params,
                 context: ProcessContext, pixel: float) -> dict[str, Any]:
        state = result.state
        classes = outputs.class_averages(context, result, pixel, symmetry=params.symmetry)
        title = f"{self.name}: {len(subtomograms)} particles, {params.classes} classes"
        if state.history:
            outputs.occupancy_png(state.history, context.output_path(outputs.OCCUPANCY_PNG),
                                  title)
        outputs.class_slices_png(result.maps, [
            f"{c.name}: {c.particle_count} p" + (f", {c.resolution_a:.0f} Å"
                                                 if c.resolution_a else "")
            for c in classes], context.output_path(outputs.CLASSES_PNG), title)
        posterior = state.responsibilities[np.arange(len(subtomograms)), state.labels]
        classified = outputs.classified_subtomograms(
            subtomograms, state.labels, rotations=state.rotations, shifts_a=state.shifts_a,
            scores=posterior)
        return {"classes": classes, "subtomograms": classified}


class AverageClassify(_ClassesProtocol):
    """3D classification of aligned subtomograms into K classes."""

    name = "average.classify"
    label = "3D classification"
    description = (
        "Classifies aligned subtomograms into K classes by maximum likelihood (soft posteriors "
        "with a per-shell noise model on each particle's CTF² weight) or hard assignment, with "
        "the refined poses or a local search around them. Particles are compared with each "
        "class only where they carry information (missing wedge, CTF) and against the other "
        "half set's class references; classes are reconstructed in gold-standard halves with "
        "their FSC. Checkpointed every iteration.")
    Params = Classify3dParams

    def settings(self, params: Classify3dParams,
                 context: ProcessContext) -> classes3d.ClassifySettings:
        return classes3d.ClassifySettings(
            classes=params.classes, particle_diameter_a=params.particle_diameter_a,
            resolution_a=params.resolution_a, assignment=params.assignment,
            alignment=params.alignment, angular_step_deg=params.angular_step_deg,
            local_range_deg=params.local_range_deg, shift_range_a=params.shift_range_a,
            max_iterations=params.max_iterations, symmetry=params.symmetry,
            n_threads=max(1, context.n_threads), seed=params.seed)


class AverageMra(_ClassesProtocol):
    """Multi-reference alignment: every particle aligned to every reference, given to the best."""

    name = "average.mra"
    label = "Multi-reference alignment"
    description = (
        "Aligns every particle locally to each of K references with the wedge- and CTF-aware "
        "score of average.refine and gives it to the best one; the references are re-averaged "
        "per class in gold-standard halves, until the assignments settle. References are given "
        "(input 'reference', one per class) or seeded from k-means on the wedge-compensated "
        "principal components.")
    Params = MraParams

    def settings(self, params: MraParams,
                 context: ProcessContext) -> classes3d.ClassifySettings:
        return classes3d.ClassifySettings(
            classes=params.classes, particle_diameter_a=params.particle_diameter_a,
            resolution_a=params.resolution_a, assignment="hard", alignment="local",
            angular_step_deg=params.angular_step_deg, local_range_deg=params.local_range_deg,
            shift_range_a=params.shift_range_a, max_iterations=params.max_iterations,
            symmetry=params.symmetry, n_threads=max(1, context.n_threads), seed=params.seed)
