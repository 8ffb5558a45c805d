"""Particle images for averaging: subtomograms from tomograms and pseudo-subtomograms from tilts.

Both write ``Subtomogram`` items in the form averaging reads (algorithms/averaging/
particle_images.py): a real-space box and a 3D Fourier weight with the zero frequency at the
box centre (RELION 3.1's ``rlnCtfImage``). ``particles.extract`` cuts boxes from a tomogram;
with the tilt series as input its weight is each particle's own 3D CTF model (missing wedge of
the actual tilts, CTF of every tilt at the particle's defocus, exposure damping).
``particles.extract_pseudo`` builds CTF-premultiplied pseudo-subtomograms from the tilt
images themselves (RELION 4's idea).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms import extraction
from tomoweave.algorithms.averaging import pseudo_subtomograms as pseudo
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
from tomoweave.formats.mrc import MrcError, mmap_mrc, write_mrc
from tomoweave.geometry.projection import projection_matrices
from tomoweave.model import Particle, Subtomogram, TiltSeries, Tomogram, particles_by_tomogram

CITATION_PSEUDO = ("Zivanov J, et al. (2022) A Bayesian approach to single-particle electron "
                   "cryo-tomography in RELION-4.0. eLife 11:e83724.")
CITATION_DOSE = ("Grant T, Grigorieff N (2015) Measuring the optimal exposure for single particle "
                 "cryo-EM using a 2.6 Å reconstruction of rotavirus VP6. eLife 4:e06980.")


def _dump(particles: list[Particle]) -> list[dict]:
    return [p.model_dump(mode="json") for p in particles]


def _positions(particles: list[Particle]) -> np.ndarray:
    return np.array([p.position_a for p in particles], dtype=float).reshape(-1, 3)


def series_geometry(series: TiltSeries, need_ctf: bool) -> tuple[np.ndarray, pseudo.TiltSeriesOptics,
                                                                 list[int]]:
    """Projection matrices, per-tilt optics and stack indices of the included tilts.

    Exposure is the dose before the tilt plus half its own (the middle of its exposure).
    """
    tilts = series.included_tilts()
    if not series.is_aligned:
        raise InputError(f"{series.name}: tilt series has no alignment (tilts[].alignment); "
                         "align it first")
    missing_ctf = [t.tilt_deg for t in tilts if t.ctf is None]
    if need_ctf and missing_ctf:
        raise InputError(f"{series.name}: {len(missing_ctf)} tilts have no CTF (tilts[].ctf, "
                         f"e.g. at {missing_ctf[0]:g}°); run ctf.estimate first or switch the "
                         "CTF off")
    acquisition = series.acquisition
    dose = acquisition.dose_per_tilt_e_a2
    exposure = np.array([t.pre_exposure_e_a2 + 0.5 * dose for t in tilts])
    have_ctf = not missing_ctf
    zeros = np.zeros(len(tilts))
    optics = pseudo.TiltSeriesOptics(
        defocus_u_a=np.array([t.ctf.defocus_u_a for t in tilts]) if have_ctf else zeros,
        defocus_v_a=np.array([t.ctf.defocus_v_a for t in tilts]) if have_ctf else zeros,
        astigmatism_angle_deg=(np.array([t.ctf.astigmatism_angle_deg for t in tilts])
                               if have_ctf else zeros),
        phase_shift_deg=np.array([t.ctf.phase_shift_deg for t in tilts]) if have_ctf else None,
        exposure_e_a2=exposure if dose > 0 else None, voltage_kv=acquisition.voltage_kv,
        spherical_aberration_mm=acquisition.spherical_aberration_mm,
        amplitude_contrast=acquisition.amplitude_contrast)
    matrices = projection_matrices([t.alignment for t in tilts])
    return matrices, optics, [series.tilts.index(t) for t in tilts]


def _series_for(tomogram_name: str, series_by_name: dict[str, TiltSeries],
                tomogram: Tomogram | None = None) -> TiltSeries | None:
    name = (tomogram.tilt_series if tomogram is not None and tomogram.tilt_series
            else tomogram_name)
    return series_by_name.get(name) or series_by_name.get(tomogram_name)


# ----------------------------------------------------------------------------- subtomograms
class ExtractParams(BaseModel):
    box_size_px: int = param(32, ge=4, le=1024, unit="px", help="box size of the subtomograms")
    binning: float = param(1.0, ge=1, le=16, help="extra binning of the boxes relative to the "
                           "tomogram (output voxel = tomogram voxel × binning)")
    normalise: bool = param(True, help="background zero mean, unit std")
    invert: bool = param(False, help="invert the contrast (dark protein -> bright)")
    tilt_min_deg: float = param(-60.0, ge=-90, le=90, unit="°", help="lowest tilt (wedge), "
                                "when no tilt series is given")
    tilt_max_deg: float = param(60.0, ge=-90, le=90, unit="°", help="highest tilt (wedge), "
                                "when no tilt series is given")
    ctf_weight: bool = param(False, help="include the CTF in the 3D weight: of every tilt at "
                             "the particle's own defocus with a tilt series, else the "
                             "isotropic CTF at defocus_a")
    defocus_a: float | None = param(None, gt=0, unit="Å", help="defocus for the CTF weight "
                                    "without a tilt series")
    dose_filtered: bool = param(False, help="the tomogram was reconstructed from dose-filtered "
                                "tilts (their exposure damping counts twice in the weight)")


class ExtractParticles(Protocol):
    """Subtomograms of the particles at any binning, with their 3D CTF model as weight."""

    name = "particles.extract"
    label = "Extract subtomograms"
    description = ("Cuts a box around every particle from its tomogram (positions in Å scale "
                   "to any binning; sub-voxel accurate by cubic splines), optionally binned, "
                   "normalised and inverted, and writes its 3D weight: the signed 3D CTF model "
                   "(RELION 3.1 style). With the tilt series as input the weight is per "
                   "particle: the missing wedge of the actual tilts, each tilt's CTF at the "
                   "particle's own defocus (its height in the tilted specimen) and exposure "
                   "damping; without, the wedge of a tilt range (× an isotropic CTF).")
    citations = [CITATION_DOSE]
    Params = ExtractParams
    inputs = {"particles": Input(Particle, help="particles to extract"),
              "tomograms": Input(Tomogram, mapped=False, help="tomograms to cut them from "
                                 "(any binning)"),
              "tilt_series": Input(TiltSeries, mapped=False, optional=True,
                                   help="aligned tilt series of the tomograms, for "
                                   "per-particle 3D CTF weights")}
    outputs = {"subtomograms": Output(Subtomogram, help="one box per particle")}

    def plan(self, params: ExtractParams, inputs: dict[str, Any]) -> list[Task]:
        tomograms = {t.name: t for t in inputs.get("tomograms") or []}
        series_by_name = {s.name: s for s in inputs.get("tilt_series") or []}
        groups = dict(sorted(particles_by_tomogram(inputs.get("particles", [])).items()))
        unknown = sorted(set(groups) - set(tomograms))
        if unknown:
            raise InputError(f"particles refer to tomograms {unknown} that are not in the "
                             f"'tomograms' input (it holds {sorted(tomograms) or 'none'})")
        if params.ctf_weight and params.defocus_a is None and not series_by_name:
            raise InputError("ctf_weight needs defocus_a or the tilt_series input")
        tasks = []
        for name, group in groups.items():
            series = _series_for(name, series_by_name, tomograms[name])
            if series_by_name and series is None:
                raise InputError(f"tomogram {name}: no tilt series of that name in the "
                                 f"'tilt_series' input (it holds {sorted(series_by_name)})")
            if series is not None:
                series_geometry(series, params.ctf_weight)  # fail early, in plan
            tasks.append(Task(key=name, payload={
                "particles": _dump(group), "tomogram": tomograms[name].model_dump(mode="json"),
                "tilt_series": series.model_dump(mode="json") if series else None}))
        return tasks

    def process(self, payload: dict, params: ExtractParams,
                context: ProcessContext) -> dict[str, Any]:
        particles = [Particle(**record) for record in payload["particles"]]
        tomogram = Tomogram(**payload["tomogram"])
        try:
            volume = mmap_mrc(context.resolve(tomogram.path))
        except MrcError as error:
            raise ItemError(f"{tomogram.name}: {error}") from None
        pixel_out = tomogram.pixel_size_a * params.binning
        with volume as mrc:
            boxes = extraction.extract_particles(
                mrc.data, tomogram.pixel_size_a, _positions(particles), params.box_size_px,
                params.binning, params.normalise, params.invert)
        weights = self._weights(payload, params, tomogram, particles, pixel_out, context)
        subtomograms = []
        for index, (particle, box) in enumerate(zip(particles, boxes, strict=True)):
            path = write_mrc(context.output_path(f"{tomogram.name}/{particle.name}.mrc"), box,
                             pixel_out)
            subtomograms.append(Subtomogram(
                name=particle.name, particle=particle, path=context.relative(path),
                weight_path=weights[min(index, len(weights) - 1)], pixel_size_a=pixel_out,
                box_size_px=params.box_size_px))
        context.log(f"{len(subtomograms)} boxes of {params.box_size_px} px at "
                    f"{pixel_out:g} Å/px; weights: "
                    f"{'per particle from the tilts' if len(weights) > 1 else 'one shared'}")
        return {"subtomograms": subtomograms}

    @staticmethod
    def _weights(payload, params: ExtractParams, tomogram: Tomogram, particles, pixel_out,
                 context: ProcessContext) -> list[str]:
        """Project-relative weight paths: one per particle with a tilt series, else one."""
        sign = -1.0 if params.invert else 1.0  # the model of an inverted box is -C · S
        if payload.get("tilt_series") is None:
            ctf = {"defocus_a": params.defocus_a,
                   "phase_flipped": tomogram.ctf_corrected} if params.ctf_weight else None
            weight = extraction.weight_volume(params.box_size_px, pixel_out,
                                              (params.tilt_min_deg, params.tilt_max_deg), ctf)
            weight = weight * sign if ctf is not None else weight
            return [context.relative(write_mrc(
                context.output_path(f"{tomogram.name}/weight.mrc"), weight, pixel_out))]
        series = TiltSeries(**payload["tilt_series"])
        matrices, optics, _ = series_geometry(series, params.ctf_weight)
        paths = []
        for count, particle in enumerate(particles, start=1):
            context.progress(count / len(particles), f"{tomogram.name}: 3D CTF model {count} "
                             f"of {len(particles)}")
            model = pseudo.ctf_model_3d(
                matrices, optics, np.asarray(particle.position_a), params.box_size_px,
                pixel_out, ctf_on=params.ctf_weight, phase_flipped=tomogram.ctf_corrected,
                exposure_power=2.0 if params.dose_filtered else 1.0)
            model = model * sign if params.ctf_weight else model
            paths.append(context.relative(write_mrc(context.output_path(
                f"{tomogram.name}/weights/{particle.name}.mrc"), model, pixel_out)))
        return paths


# ----------------------------------------------------------------------------- pseudo
class PseudoParams(BaseModel):
    box_size_px: int = param(32, ge=8, le=512, unit="px", help="box size of the "
                             "pseudo-subtomograms (even)")
    binning: float = param(1.0, ge=1, le=16, help="binning relative to the tilt images "
                           "(output voxel = tilt pixel × binning; patches are cropped in "
                           "Fourier space)")


class ExtractPseudo(Protocol):
    """CTF-premultiplied pseudo-subtomograms from the tilt series, with CTF² and multiplicity."""

    name = "particles.extract_pseudo"
    label = "Extract pseudo-subtomograms"
    description = ("For every particle, the patch of each tilt image at the particle's "
                   "projected position (through the tilt's projection matrix) is "
                   "CTF-premultiplied at the particle's own defocus and dose-weighted, and "
                   "inserted into a 3D Fourier box as a central slice; the accumulated CTF² "
                   "(weight) and multiplicity volumes are written beside it (RELION 4's "
                   "pseudo-subtomograms). Any binning: patches are cropped in Fourier space.")
    citations = [CITATION_PSEUDO, CITATION_DOSE]
    Params = PseudoParams
    inputs = {"particles": Input(Particle, help="particles to extract"),
              "tilt_series": Input(TiltSeries, mapped=False, help="aligned tilt series with "
                                   "per-tilt CTF, named as the particles' tomograms")}
    outputs = {"subtomograms": Output(Subtomogram, help="one pseudo-subtomogram per particle")}

    def plan(self, params: PseudoParams, inputs: dict[str, Any]) -> list[Task]:
        if params.box_size_px % 2:
            raise InputError(f"box_size_px {params.box_size_px}: expected an even size")
        series_by_name = {s.name: s for s in inputs.get("tilt_series") or []}
        groups = dict(sorted(particles_by_tomogram(inputs.get("particles", [])).items()))
        tasks = []
        for name, group in groups.items():
            series = _series_for(name, series_by_name)
            if series is None:
                raise InputError(f"particles of tomogram {name}: no tilt series of that name "
                                 f"in the 'tilt_series' input (it holds "
                                 f"{sorted(series_by_name) or 'none'})")
            series_geometry(series, need_ctf=True)
            tasks.append(Task(key=name, payload={"particles": _dump(group),
                                                 "tilt_series": series.model_dump(mode="json")}))
        return tasks

    def process(self, payload: dict, params: PseudoParams,
                context: ProcessContext) -> dict[str, Any]:
        particles = [Particle(**record) for record in payload["particles"]]
        series = TiltSeries(**payload["tilt_series"])
        matrices, optics, indices = series_geometry(series, need_ctf=True)
        images = _ContrastTilts(series, indices, context)
        pixel_a = series.pixel_size_a
        subtomograms = []
        for count, particle in enumerate(particles, start=1):
            result = pseudo.pseudo_subtomogram(
                images, matrices, optics, pixel_a, np.asarray(particle.position_a),
                params.box_size_px, binning=params.binning)
            pixel_out = result.pixel_size_a
            folder = f"{series.name}/{particle.name}"
            paths = [context.relative(write_mrc(context.output_path(f"{folder}{suffix}.mrc"),
                                                volume, pixel_out))
                     for suffix, volume in (("", result.real_space()),
                                            ("_weight", result.centred_weight()),
                                            ("_multiplicity", result.centred_multiplicity()))]
            subtomograms.append(Subtomogram(
                name=particle.name, particle=particle, path=paths[0], weight_path=paths[1],
                multiplicity_path=paths[2], ctf_premultiplied=True, pixel_size_a=pixel_out,
                box_size_px=params.box_size_px))
            context.progress(count / len(particles), f"{series.name}: {count} of "
                             f"{len(particles)} pseudo-subtomograms")
        context.log(f"{series.name}: {len(subtomograms)} pseudo-subtomograms of "
                    f"{params.box_size_px} px from {len(indices)} tilts")
        return {"subtomograms": subtomograms}


class _ContrastTilts:
    """The included tilts of a series as contrast images (counts / mean − 1), read lazily.

    Images that are not counts (mean ≤ 0 or noise larger than the mean: already normalised)
    are taken as (image − mean) / std.
    """

    def __init__(self, series: TiltSeries, indices: list[int], context: ProcessContext):
        self.tilts = [series.tilts[i] for i in indices]
        self.maps: dict[str, Any] = {}
        self.scales: list[tuple[float, float]] = []
        for tilt in self.tilts:
            image = self._raw(tilt, series.name, context)
            mean, std = float(np.mean(image)), float(np.std(image))
            counts = mean > 0 and std < mean
            self.scales.append((mean, mean) if counts else (mean, std or 1.0))
        self.shape = (len(self.tilts), *self._raw(self.tilts[0], series.name, context).shape)

    def _raw(self, tilt, series_name: str, context: ProcessContext) -> np.ndarray:
        if tilt.image_path is None:
            raise ItemError(f"{series_name}: tilt {tilt.tilt_deg:g}° has no image_path")
        if tilt.image_path not in self.maps:
            try:
                self.maps[tilt.image_path] = mmap_mrc(context.resolve(tilt.image_path)).__enter__()
            except MrcError as error:
                raise ItemError(f"{series_name}: {error}") from None
        data = self.maps[tilt.image_path].data
        return data[tilt.image_index] if data.ndim == 3 else data

    def __getitem__(self, index: int) -> _ContrastImage:
        mean, scale = self.scales[index]
        return _ContrastImage(self._raw(self.tilts[index], "", None), mean, scale)


class _ContrastImage:
    def __init__(self, raw: np.ndarray, mean: float, scale: float):
        self.raw, self.mean, self.scale, self.shape = raw, mean, scale, raw.shape

    def __getitem__(self, region) -> np.ndarray:
        return ((np.asarray(self.raw[region], dtype=np.float32) - self.mean) / self.scale)


def contrast_stack(series: TiltSeries, indices: list[int], context: ProcessContext) -> np.ndarray:
    """The included tilts ``indices`` of a series as one contrast array (T, ny, nx) float32
    (counts / mean − 1, or standardised when the images are not counts; see _ContrastTilts)."""
    tilts = _ContrastTilts(series, indices, context)
    return np.stack([tilts[i][...] for i in range(len(indices))]).astype(np.float32)
