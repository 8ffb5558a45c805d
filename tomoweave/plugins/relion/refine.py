"""relion.refine and relion.classify3d: relion_refine_mpi on tomoweave's subtomograms.

The subtomograms go to RELION as a RELION 3.1 particles STAR with their 3D CTF images
(``formats.relion_subtomograms``); their orientations are the starting poses (local searches
with ``search_sigma_deg``). RELION's results come back as an ``Average`` (auto-refinement:
half maps, gold-standard FSC, per-iteration resolution) or ``ClassAverages``
(classification), and the particles with their refined poses (``rotation``, ``shift_a``,
``half_set``, ``class_id``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.relion_results import read_model_star
from tomoweave.formats.relion_subtomograms import read_relion31_subtomograms
from tomoweave.formats.star_io import StarFormatError, numeric_column, read_star_blocks
from tomoweave.model import Average, ClassAverages, FscShell, Particle, Subtomogram, Volume
from tomoweave.plugins.relion.programs import (
    MPIRUN,
    RELION_REFINE_MPI,
    mpi_command,
    mpi_environment,
)
from tomoweave.plugins.relion.reconstruct import (
    CITATION_RELION,
    CITATION_RELION_STA,
    check_one_box,
    keep_output,
    relion_star,
)

HEALPIX_STEPS_DEG = {0: 60.0, 1: 30.0, 2: 15.0, 3: 7.5, 4: 3.7, 5: 1.8, 6: 0.9}
CITATION_GOLD = ("Scheres SHW, Chen S (2012) Prevention of overfitting in cryo-EM structure "
                 "determination. Nat Methods 9:853-854")


class _RelionRefineParams(BaseModel):
    particle_diameter_a: float = param(..., gt=0, unit="Å",
                                       help="diameter of the circular mask (--particle_diameter)")
    symmetry: str = param("C1", help="point group (--sym)")
    initial_lowpass_a: float = param(40.0, gt=0, unit="Å",
                                     help="low-pass of the reference at the start (--ini_high)")
    angular_step_deg: float = param(15.0, gt=0, unit="°",
                                    help="first angular sampling: 30, 15, 7.5, 3.7 or 1.8 "
                                    "(RELION's HEALPix orders 1-5)")
    local_search_deg: float | None = param(
        15.0, gt=0, unit="°", help="search ± this around the subtomograms' orientations "
        "(RELION's --sigma_ang is a third of it); None: a global search")
    offset_range_px: float = param(2.0, ge=0, unit="px", help="translation search range")
    offset_step_px: float = param(1.0, gt=0, unit="px", help="translation search step")
    mpi_ranks: int = param(3, ge=1, help="MPI processes (auto-refinement needs 3: a leader "
                           "and one per half set)")
    threads: int = param(1, ge=1, help="threads per MPI process (--j)")
    timeout_min: float | None = param(None, gt=0, unit="min",
                                      help="stop RELION after this long (default: no limit)")


def healpix_order(step_deg: float) -> int:
    """RELION's HEALPix order of an angular step (the nearest one)."""
    return min(HEALPIX_STEPS_DEG, key=lambda order: abs(HEALPIX_STEPS_DEG[order] - step_deg))


def common_args(params: _RelionRefineParams, star: str, reference: str) -> list[str]:
    order = healpix_order(params.angular_step_deg)
    args = ["--i", star, "--ref", reference, "--ini_high", f"{params.initial_lowpass_a:g}",
            "--particle_diameter", f"{params.particle_diameter_a:g}", "--sym", params.symmetry,
            "--ctf", "--flatten_solvent", "--zero_mask", "--norm", "--scale",
            "--dont_combine_weights_via_disc", "--pool", "10", "--pad", "2",
            "--oversampling", "1", "--healpix_order", str(order),
            "--offset_range", f"{params.offset_range_px:g}",
            "--offset_step", f"{params.offset_step_px:g}", "--j", str(params.threads)]
    if params.local_search_deg:
        args += ["--sigma_ang", f"{params.local_search_deg / 3.0:g}"]
    return args


def reference_file(context: ProcessContext, pixel_size_a: float, box: int) -> str:
    (reference,) = context.inputs["reference"]
    if reference.size_xyz != (box,) * 3 or not np.isclose(reference.pixel_size_a, pixel_size_a,
                                                          rtol=1e-3):
        raise ItemError(f"reference {reference.name}: {reference.size_xyz} at "
                        f"{reference.pixel_size_a:g} Å, the subtomograms are {box}³ at "
                        f"{pixel_size_a:g} Å")
    return str(context.resolve(reference.path))


def run_relion_refine(context: ProcessContext, params: _RelionRefineParams,
                      args: list[str]) -> None:
    command = [*mpi_command(params.mpi_ranks), "relion_refine_mpi", "--o", "relion/run", *args]
    (context.work_dir / "relion").mkdir(exist_ok=True)
    context.run_command(command, cwd=context.work_dir, env=mpi_environment(),
                        program=(MPIRUN, RELION_REFINE_MPI),
                        timeout_s=params.timeout_min * 60 if params.timeout_min else None)


def refined_subtomograms(context: ProcessContext, data_star: Path,
                         inputs: list[Subtomogram]) -> list[Subtomogram]:
    """The input subtomograms with RELION's poses: rotation, shift_a (the refined centre minus
    the box centre), half_set (rlnRandomSubset) and class_id (rlnClassNumber)."""
    try:
        refined, _ = read_relion31_subtomograms(data_star)
        table = read_star_blocks(data_star)["particles"]
        halves = (numeric_column(table, "rlnRandomSubset", data_star, "particles")
                  .astype(int).tolist() if "rlnRandomSubset" in table.columns
                  else [None] * len(table))
        classes = (numeric_column(table, "rlnClassNumber", data_star, "particles")
                   .astype(int).tolist() if "rlnClassNumber" in table.columns
                   else [None] * len(table))
    except StarFormatError as error:
        raise ItemError(f"RELION's result {error}") from None
    if len(refined) != len(inputs):
        raise ItemError(f"{data_star.name}: {len(refined)} particles for {len(inputs)} "
                        f"subtomograms")
    updated = []
    for item, result, half, class_id in zip(inputs, refined, halves, classes, strict=True):
        shift = np.subtract(result.particle.position_a, item.particle.position_a)
        particle = item.particle.model_copy(update={
            "rotation": result.particle.rotation, "shift_a": tuple(float(s) for s in shift),
            "half_set": half if half in (1, 2) else None, "class_id": class_id})
        updated.append(item.model_copy(update={"particle": Particle.model_validate(
            particle.model_dump())}))
    return updated


def iteration_records(folder: Path) -> list[dict[str, Any]]:
    """Per-iteration resolution, angular accuracy and time of an auto-refinement (from its
    ``run_itNNN_half1_model.star`` files and when RELION wrote them)."""
    records = []
    paths = sorted(folder.glob("run_it[0-9][0-9][0-9]_half1_model.star"))
    for previous, path in zip(paths, paths[1:], strict=False):
        try:
            model = read_model_star(path)
        except StarFormatError:
            continue
        records.append({"iteration": int(re.search(r"_it(\d+)_", path.name).group(1)),
                        "resolution_a": model.resolution_a,
                        "angular_accuracy_deg": model.classes[0].accuracy_rotations_deg,
                        "seconds": round(path.stat().st_mtime - previous.stat().st_mtime, 1)})
    return records


class RelionRefineParams(_RelionRefineParams):
    pass


class RelionRefine(Protocol):
    """relion_refine_mpi --auto_refine --split_random_halves on subtomograms with 3D CTFs."""

    name = "relion.refine"
    label = "RELION: 3D auto-refine of subtomograms"
    description = ("Gold-standard 3D auto-refinement (RELION 3.1) of subtomograms with their 3D "
                   "CTF images, from their orientations (local searches) or a global search; "
                   "the average with half maps and FSC, and the refined particles.")
    citations = [CITATION_RELION, CITATION_RELION_STA, CITATION_GOLD]
    programs = (MPIRUN, RELION_REFINE_MPI)
    Params = RelionRefineParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="subtomograms to refine"),
              "reference": Input(Volume, mapped=False, help="starting reference, same box")}
    outputs = {"average": Output(Average, help="the refined average"),
               "subtomograms": Output(Subtomogram, help="subtomograms with refined poses"),
               "particles": Output(Particle, help="their particles")}

    def plan(self, params: RelionRefineParams, inputs: dict[str, Any]) -> list[Task]:
        check_one_box(list(inputs.get("subtomograms") or []), "subtomograms")
        return [Task(key="refine", payload={})]

    def process(self, payload: dict, params: RelionRefineParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = list(context.inputs["subtomograms"])
        box, pixel = subtomograms[0].box_size_px, subtomograms[0].pixel_size_a
        star = relion_star(context, subtomograms)
        order = healpix_order(params.angular_step_deg)
        args = common_args(params, star, reference_file(context, pixel, box))
        args += ["--auto_refine", "--split_random_halves", "--low_resol_join_halves", "40",
                 "--auto_local_healpix_order", str(order if params.local_search_deg else 4)]
        run_relion_refine(context, params, args)
        folder = context.work_dir / "relion"
        try:
            model = read_model_star(folder / "run_model.star")
        except StarFormatError as error:
            raise ItemError(f"RELION's result {error}") from None
        refined = refined_subtomograms(context, folder / "run_data.star", subtomograms)
        shells = [FscShell(**record) for record in model.classes[0].fsc]
        average = Average(
            name="relion_refine", path=keep_output(context, "relion/run_class001.mrc",
                                                   "relion_refine.mrc"),
            half1_path=keep_output(context, "relion/run_half1_class001_unfil.mrc",
                                   "relion_refine_half1.mrc"),
            half2_path=keep_output(context, "relion/run_half2_class001_unfil.mrc",
                                   "relion_refine_half2.mrc"),
            pixel_size_a=pixel, size_xyz=(box,) * 3, fsc=shells or None,
            resolution_a=model.resolution_a, particle_count=len(refined),
            symmetry=params.symmetry, iterations=iteration_records(folder) or None)
        context.log(f"RELION auto-refine: {model.resolution_a or float('nan'):.1f} Å "
                    f"(gold-standard FSC 0.143) from {len(refined)} subtomograms")
        return {"average": average, "subtomograms": refined,
                "particles": [s.particle for s in refined]}


class RelionClassifyParams(_RelionRefineParams):
    classes: int = param(2, ge=1, help="number of classes (--K)")
    iterations: int = param(25, ge=1, help="iterations (--iter)")
    regularisation: float = param(4.0, gt=0, help="regularisation parameter T (--tau2_fudge)")


class RelionClassify3d(Protocol):
    """relion_refine_mpi 3D classification of subtomograms with 3D CTFs."""

    name = "relion.classify3d"
    label = "RELION: 3D classification of subtomograms"
    description = ("Maximum-likelihood 3D classification (RELION 3.1) of subtomograms with their "
                   "3D CTF images into K classes; the class maps with their sizes, and the "
                   "particles with their class and pose.")
    citations = [CITATION_RELION, CITATION_RELION_STA]
    programs = (MPIRUN, RELION_REFINE_MPI)
    Params = RelionClassifyParams
    inputs = RelionRefine.inputs
    outputs = {"classes": Output(ClassAverages, help="one map per class"),
               "subtomograms": Output(Subtomogram, help="subtomograms with class and pose"),
               "particles": Output(Particle, help="their particles")}

    def plan(self, params: RelionClassifyParams, inputs: dict[str, Any]) -> list[Task]:
        check_one_box(list(inputs.get("subtomograms") or []), "subtomograms")
        return [Task(key="classify", payload={})]

    def process(self, payload: dict, params: RelionClassifyParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = list(context.inputs["subtomograms"])
        box, pixel = subtomograms[0].box_size_px, subtomograms[0].pixel_size_a
        star = relion_star(context, subtomograms)
        args = common_args(params, star, reference_file(context, pixel, box))
        args += ["--K", str(params.classes), "--iter", str(params.iterations),
                 "--tau2_fudge", f"{params.regularisation:g}"]
        run_relion_refine(context, params, args)
        last = f"relion/run_it{params.iterations:03d}"
        try:
            model = read_model_star(context.work_dir / f"{last}_model.star")
        except StarFormatError as error:
            raise ItemError(f"RELION's result {error}") from None
        classified = refined_subtomograms(context, context.work_dir / f"{last}_data.star",
                                          subtomograms)
        sizes = [sum(s.particle.class_id == k for s in classified)
                 for k in range(1, params.classes + 1)]
        paths = [keep_output(context, f"{last}_class{k:03d}.mrc", f"relion_class{k:03d}.mrc")
                 for k in range(1, params.classes + 1)]
        context.log("RELION classes: " + ", ".join(
            f"{k + 1}: {n} particles ({c.estimated_resolution_a or float('nan'):.0f} Å)"
            for k, (n, c) in enumerate(zip(sizes, model.classes, strict=True))))
        classes = ClassAverages(name="relion_classify3d", class_paths=paths, class_sizes=sizes,
                                pixel_size_a=pixel)
        return {"classes": classes, "subtomograms": classified,
                "particles": [s.particle for s in classified]}
