"""average.pca and average.spa_leap: continuous variability and fast junk removal.

``average.pca`` — missing-wedge-compensated principal components of aligned subtomograms
(algorithms/classification/pca.py): each particle's coordinates on the components
(``Particle.components``), eigenvolumes, clusters of the leading components (k-means or a
Gaussian mixture) reconstructed as class averages with their FSC, and averages of the
particles binned along the first component (the trajectory through the conformations).

``average.spa_leap`` — the "SPA leap" (algorithms/classification/spa_leap.py): every
subtomogram projected along Z (its central slab), reference-free 2D classification with
in-plane alignment, the classes that show a particle kept (automatically, or the classes
listed in ``keep_classes``), and the pruned subtomogram set back.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms.averaging.particle_images import image_source
from tomoweave.algorithms.classification import classes3d, clustering, pca, spa_leap
from tomoweave.engine import Input, InputError, Output, ProcessContext, Protocol, Task, param
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Average, Subtomogram, Volume
from tomoweave.protocols import classify_outputs as outputs
from tomoweave.protocols.average import half_sets_of, particle_arrays

PCA_CITATIONS = [
    "Förster F et al. (2008) Classification of cryo-electron sub-tomograms using constrained "
    "correlation. J Struct Biol 161:276-286",
    "Heumann JM, Hoenger A, Mastronarde DN (2011) Clustering and variance maps for "
    "cryo-electron tomography using wedge-masked differences. J Struct Biol 175:288-299",
]
SPA_CITATIONS = [
    "Scheres SHW et al. (2005) Maximum-likelihood multi-reference refinement for electron "
    "microscopy images. J Mol Biol 348:139-149",
    "Himes BA, Zhang P (2018) emClarity: software for high-resolution cryo-electron tomography "
    "and subtomogram averaging. Nat Methods 15:955-961",
]
CLUSTERINGS = ("kmeans", "gmm")


class PcaParams(BaseModel):
    particle_diameter_a: float = param(..., gt=0, unit="Å", help="particle diameter (FSC "
                                       "mask of the cluster averages)")
    resolution_a: float = param(30.0, gt=0, unit="Å", help="highest resolution analysed")
    components: int = param(3, ge=1, le=20, help="principal components kept")
    clusters: int = param(2, ge=1, le=20, help="clusters of the leading components (1: none)")
    clustering: Literal["kmeans", "gmm"] = param("kmeans", choices=list(CLUSTERINGS),
                                                 help="k-means or a Gaussian mixture")
    cluster_components: int = param(2, ge=1, le=20, help="leading components clustered")
    trajectory_bins: int = param(5, ge=2, le=20, help="averages along the first component")
    seed: int = param(0, ge=0, help="seed of the clustering starts")
    memory_gb: float = param(2.0, gt=0, unit="GB", help="particle images kept in memory")


class AveragePca(Protocol):
    """Wedge-compensated PCA, clusters and trajectory averages of aligned subtomograms."""

    name = "average.pca"
    label = "Principal components (continuous variability)"
    description = (
        "Principal component analysis of aligned subtomograms that compares each particle "
        "with the average only where both carry information (missing wedge, CTF): a "
        "particle-by-particle covariance over the voxels both sampled, its eigenvectors as "
        "each particle's component coordinates, eigenvolumes, k-means or Gaussian-mixture "
        "clusters of the leading components averaged with their FSC, and averages of the "
        "particles binned along the first component.")
    citations = PCA_CITATIONS
    Params = PcaParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="aligned subtomograms")}
    outputs = {"subtomograms": Output(Subtomogram, help="with components and cluster "
                                      "(class_id)"),
               "classes": Output(Average, help="one average per cluster"),
               "trajectory": Output(Volume, help="averages binned along component 1, low "
                                    "to high"),
               "eigenvolumes": Output(Volume, help="eigenvolumes at the analysed box")}

    def plan(self, params: PcaParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = outputs.checked_subtomograms(self.name, inputs,
                                             max(params.components + 1, 2 * params.clusters))
        return [Task(key="pca", payload=[s.model_dump(mode="json") for s in subtomograms])]

    def process(self, payload: list, params: PcaParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload]
        source = image_source(subtomograms, context.resolve,
                              memory_budget_bytes=params.memory_gb * 1e9)
        arrays = particle_arrays(subtomograms)
        rotations, shifts = arrays["rotations"], arrays["shifts_a"]
        context.progress(0.05, "particles into the reference frame")
        spectra = pca.reference_frame_spectra(source, rotations, shifts,
                                              resolution_a=params.resolution_a)
        analysis = pca.principal_components(spectra, params.components)
        context.log("explained (of the positive eigenvalues): " + ", ".join(
            f"{100 * e:.1f} %" for e in analysis.explained))
        labels = self._clusters(analysis.coordinates, params)
        context.progress(0.5, "cluster averages")
        halves = half_sets_of(subtomograms, arrays, params.particle_diameter_a, context.log)
        settings = classes3d.ClassifySettings(classes=params.clusters,
                                              particle_diameter_a=params.particle_diameter_a,
                                              seed=params.seed)
        result = classes3d.class_maps_from_labels(source, rotations, shifts, halves, labels,
                                                  settings)
        pixel = source.pixel_size_a
        classes = outputs.class_averages(context, result, pixel, prefix="cluster")
        context.progress(0.75, "trajectory averages")
        maps, _ = pca.trajectory_averages(source, rotations, shifts, analysis.coordinates[:, 0],
                                          params.trajectory_bins)
        trajectory = [self._volume(context, f"trajectory_{b + 1:02d}", m, pixel)
                      for b, m in enumerate(maps)]
        eigenvolumes = [self._volume(context, f"eigenvolume_{c + 1:02d}", v,
                                     analysis.pixel_size_a)
                        for c, v in enumerate(analysis.eigenvolumes)]
        outputs.scatter_png(analysis.coordinates, labels,
                            context.output_path(outputs.SCATTER_PNG),
                            f"{len(subtomograms)} particles")
        outputs.eigenvolumes_png(analysis.eigenvolumes, analysis.explained,
                                 context.output_path(outputs.EIGENVOLUMES_PNG))
        return {"subtomograms": outputs.classified_subtomograms(
                    subtomograms, labels, components=analysis.coordinates),
                "classes": classes, "trajectory": trajectory, "eigenvolumes": eigenvolumes}

    @staticmethod
    def _clusters(coordinates: np.ndarray, params: PcaParams) -> np.ndarray:
        if params.clusters == 1:
            return np.zeros(len(coordinates), dtype=int)
        points = coordinates[:, : params.cluster_components]
        if params.clustering == "gmm":
            return clustering.gaussian_mixture(points, params.clusters, seed=params.seed).labels
        return clustering.kmeans(points, params.clusters, seed=params.seed).labels

    @staticmethod
    def _volume(context: ProcessContext, name: str, volume: np.ndarray,
                pixel_size_a: float) -> Volume:
        path = context.relative(write_mrc(context.output_path(f"{name}.mrc"),
                                          np.asarray(volume, np.float32), pixel_size_a))
        return Volume(name=name, path=path, pixel_size_a=pixel_size_a,
                      size_xyz=(volume.shape[0],) * 3)


class SpaLeapParams(BaseModel):
    particle_diameter_a: float = param(..., gt=0, unit="Å", help="particle diameter: the "
                                       "disc compared and the particle score's disc")
    classes: int = param(10, ge=2, le=200, help="2D classes")
    slab_a: float = param(0.0, ge=0, unit="Å", help="thickness of the central slab "
                          "projected (0: the whole box)")
    resolution_a: float = param(25.0, gt=0, unit="Å", help="low-pass of the projections")
    angular_step_deg: float = param(10.0, gt=0, le=45, unit="°", help="in-plane step")
    max_shift_a: float = param(30.0, ge=0, unit="Å", help="largest in-plane shift")
    iterations: int = param(10, ge=1, le=100, help="most iterations")
    threshold: float = param(3.0, help="particle score (centre above the background, in "
                             "background standard deviations) a class needs to be kept")
    keep_classes: list[int] = param([], help="2D classes to keep (numbered from 1, as in "
                                    "the gallery); empty: those at or above the threshold")
    drop_low_correlation: bool = param(True, help="within the kept classes, drop the "
                                       "particles whose correlation with their class average "
                                       "falls in the low population (when the correlations "
                                       "split in two)")
    seed: int = param(0, ge=0, help="seed of the random starting classes")
    memory_gb: float = param(2.0, gt=0, unit="GB", help="particle images kept in memory")


class AverageSpaLeap(Protocol):
    """2D classes of the subtomograms' Z projections; keep the classes that show a particle."""

    name = "average.spa_leap"
    label = "SPA leap: 2D classes of Z projections, drop junk"
    description = (
        "Projects every subtomogram (or its central slab) along Z into a CTF-corrected 2D "
        "particle, classifies the projections reference-free with in-plane alignment, and "
        "keeps the particles of the classes whose average shows a particle at the centre "
        "(score ≥ threshold, or most members correlating well with it) or of the classes "
        "listed in keep_classes, without the particles that correlate poorly with their "
        "class average. A fast way to drop "
        "junk before 3D work; the gallery shows the classes, kept ones framed in green.")
    citations = SPA_CITATIONS
    Params = SpaLeapParams
    inputs = {"subtomograms": Input(Subtomogram, mapped=False, help="subtomograms")}
    outputs = {"subtomograms": Output(Subtomogram, help="the kept particles (class_id: 2D "
                                      "class)"),
               "rejected": Output(Subtomogram, help="the particles of the other classes")}

    def plan(self, params: SpaLeapParams, inputs: dict[str, Any]) -> list[Task]:
        subtomograms = outputs.checked_subtomograms(self.name, inputs, 2 * params.classes)
        wrong = [k for k in params.keep_classes if not 1 <= k <= params.classes]
        if wrong:
            raise InputError(f"keep_classes {wrong}: expected classes 1 … {params.classes}")
        return [Task(key="spa_leap", payload=[s.model_dump(mode="json") for s in subtomograms])]

    def process(self, payload: list, params: SpaLeapParams,
                context: ProcessContext) -> dict[str, Any]:
        subtomograms = [Subtomogram.model_validate(s) for s in payload]
        source = image_source(subtomograms, context.resolve,
                              memory_budget_bytes=params.memory_gb * 1e9)
        pixel, box = source.pixel_size_a, source.box_px
        slab = int(round(params.slab_a / pixel)) or None
        projections = []
        for start in range(0, source.count, 64):
            data, weight = source.batch(np.arange(start, min(start + 64, source.count)), box)
            projections.append(spa_leap.project_along_z(data, weight, slab_px=slab,
                                                        pixel_size_a=pixel,
                                                        resolution_a=params.resolution_a))
        images = np.concatenate(projections)
        radius = 0.5 * params.particle_diameter_a / pixel
        context.progress(0.2, "2D classification")
        result = spa_leap.classify_2d(images, params.classes,
                                      mask_radius_px=min(radius + 2, box / 2 - 2),
                                      angular_step_deg=params.angular_step_deg,
                                      max_shift_px=params.max_shift_a / pixel,
                                      iterations=params.iterations, seed=params.seed)
        scores = spa_leap.particle_scores(result.averages,
                                          particle_radius_px=min(radius, box / 2 - 4))
        cut = (spa_leap.correlation_cut(result.scores) if params.drop_low_correlation
               else -np.inf)
        selected = (np.array(sorted(set(params.keep_classes))) - 1 if params.keep_classes
                    else spa_leap.select_classes(scores, threshold=params.threshold,
                                                 labels=result.labels, scores=result.scores,
                                                 cut=cut))
        kept = spa_leap.kept_particles(result.labels, selected, scores=result.scores, cut=cut)
        if np.isfinite(cut):
            context.log(f"correlations split at {cut:.3f}: "
                        f"{int(np.sum(result.scores < cut))} particles below")
        sizes = np.bincount(result.labels, minlength=params.classes).tolist()
        how = "chosen" if params.keep_classes else f"score ≥ {params.threshold:g}"
        context.log(f"2D classes kept: {(selected + 1).tolist()} ({how}); {int(kept.sum())} of "
                    f"{len(kept)} particles kept")
        write_mrc(context.output_path("classes_2d.mrcs"), result.averages, pixel, stack=True)
        outputs.gallery_png(result.averages, sizes, scores, selected,
                            context.output_path(outputs.GALLERY_PNG))
        labelled = outputs.classified_subtomograms(subtomograms, result.labels,
                                                   scores=result.scores)
        return {"subtomograms": [s for s, k in zip(labelled, kept, strict=True) if k],
                "rejected": [s for s, k in zip(labelled, kept, strict=True) if not k]}
