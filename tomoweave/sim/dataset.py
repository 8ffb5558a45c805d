"""simulate_dataset: tilt series (stacks, optional movies, .mdoc) with their ground truth.

Layout written under ``out_dir`` for each series NAME (TS_01, TS_02, ...)::

    NAME.mrc                    tilt stack, counts, in acquisition order (= ZValue order)
    NAME.mdoc                   SerialEM-style metadata; ImageFile = NAME.mrc
    frames/NAME_000_0.0.mrc     per-tilt movies (when movies are on), SerialEM naming
    truth/NAME.json             ground truth (load_truth)
    truth/NAME_volume.mrc       noise-free specimen: excess potential over ice, V, tomogram grid
    truth/NAME_projections.mrc  noise-free line integrals of that volume, V·Å, stack order
    truth/NAME_noise_free.mrc   noise-free images (CTF, damping, ice) in counts, stack order
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoweave.algorithms.ctf_model import electron_wavelength_a
from tomoweave.formats.mrc import write_mrc
from tomoweave.geometry.projection import tilt_axis_to_z_rot_deg
from tomoweave.model import Acquisition
from tomoweave.sim import imaging
from tomoweave.sim.config import SimConfig, resolve_config
from tomoweave.sim.mdoc_writer import MdocTilt, frame_file_name, mdoc_text, write_mdoc
from tomoweave.sim.projector_kernel import occupancy_blocks, project_volume_slabs
from tomoweave.sim.specimen import Specimen, build_specimen
from tomoweave.sim.tilt_scheme import acquisition_angles_deg, pre_exposures_e_a2
from tomoweave.sim.truth import (
    SeriesTruth,
    TruthParticle,
    TruthTilt,
    TruthVesicle,
    load_truth,
    save_truth,
)

FRAMES_DIR = "frames"
TRUTH_DIR = "truth"


@dataclass
class SimulatedSeries:
    name: str
    stack_path: Path
    mdoc_path: Path
    truth_path: Path
    volume_path: Path
    projections_path: Path
    noise_free_path: Path | None
    frame_paths: list[Path] = field(default_factory=list)

    def truth(self) -> SeriesTruth:
        return load_truth(self.truth_path)


@dataclass
class SimulatedDataset:
    out_dir: Path
    preset: str
    seed: int
    config: SimConfig
    series: list[SimulatedSeries]

    def truths(self) -> list[SeriesTruth]:
        return [s.truth() for s in self.series]


def series_name(config: SimConfig, index: int) -> str:
    return f"{config.name_prefix}{index + 1:02d}"


def simulate_dataset(out_dir: str | Path, preset: str = "test", seed: int = 0,
                     **overrides: Any) -> SimulatedDataset:
    """Simulate ``n_series`` tilt series of ``preset`` (with ``overrides``) into ``out_dir``.

    Deterministic in ``seed``: series i uses the random stream (seed, i), so series do not
    change when ``n_series`` does.
    """
    config = resolve_config(preset, **overrides)
    out_dir = Path(out_dir)
    series = [simulate_series(config, index, seed, out_dir, preset)
              for index in range(config.n_series)]
    return SimulatedDataset(out_dir, preset, seed, config, series)


def simulate_series(config: SimConfig, index: int, seed: int, out_dir: Path,
                    preset: str = "custom") -> SimulatedSeries:
    """Simulate series number ``index`` (0-based) of a data set and write its files."""
    name = series_name(config, index)
    if config.defocus_range_a is not None:  # own stream: the rest of the series stays the same
        low, high = config.defocus_range_a
        nominal_a = float(np.random.default_rng([seed, index, 1]).uniform(low, high))
        config = config.model_copy(update={"defocus_a": nominal_a})
    rng = np.random.default_rng([seed, index])
    specimen = build_specimen(config, rng)
    tilts = _draw_tilts(config, rng)
    images = _form_images(config, specimen, tilts, rng, np.random.default_rng([seed, index, 2]))

    out_dir.mkdir(parents=True, exist_ok=True)
    truth_dir = out_dir / TRUTH_DIR
    result = SimulatedSeries(
        name=name, stack_path=out_dir / f"{name}.mrc", mdoc_path=out_dir / f"{name}.mdoc",
        truth_path=truth_dir / f"{name}.json", volume_path=truth_dir / f"{name}_volume.mrc",
        projections_path=truth_dir / f"{name}_projections.mrc",
        noise_free_path=truth_dir / f"{name}_noise_free.mrc" if config.write_noise_free else None,
    )
    px = config.pixel_size_a
    write_mrc(result.stack_path, images["stack"], px, stack=True)
    write_mrc(result.volume_path, specimen.volume_v, px)
    write_mrc(result.projections_path, images["projections"], px, stack=True)
    if result.noise_free_path is not None:
        write_mrc(result.noise_free_path, images["noise_free"], px, stack=True)
    if config.movies_on:
        for order, tilt in enumerate(tilts):
            tilt.movie_file = frame_file_name(name, order, tilt.nominal_tilt_deg)
            path = out_dir / FRAMES_DIR / tilt.movie_file
            write_mrc(path, images["frames"][order], px, stack=True)
            result.frame_paths.append(path)
    write_mdoc(result.mdoc_path, _mdoc(config, name, tilts))
    save_truth(_truth(config, name, seed, preset, specimen, tilts, result, out_dir),
               result.truth_path)
    return result


def _draw_tilts(config: SimConfig, rng: np.random.Generator) -> list[TruthTilt]:
    """Nominal tilts in acquisition order with their true geometry, CTF and dose history."""
    nominal = acquisition_angles_deg(config.tilt_scheme, config.tilt_min_deg,
                                     config.tilt_max_deg, config.tilt_step_deg,
                                     config.dose_symmetric_group_size,
                                     config.bidirectional_start_deg)
    count = len(nominal)
    scale = config.misalignment
    axis_error = scale * rng.uniform(-1, 1) * config.tilt_axis_error_deg
    z_rot = tilt_axis_to_z_rot_deg(config.tilt_axis_deg + axis_error)
    tilt_offset = scale * rng.uniform(-1, 1) * config.tilt_offset_deg
    shifts = rng.normal(0.0, scale * config.shift_sigma_a, size=(count, 2))
    defoci = config.defocus_a + rng.normal(0.0, config.defocus_sigma_a, size=count)
    astig_angle = rng.uniform(0, 180) + rng.normal(0, 3.0, size=count)
    pre = pre_exposures_e_a2(count, config.dose_per_tilt_e_a2)
    drifts = [imaging.drift_trajectory_px(config.n_frames, config.drift_total_px, rng)
              for _ in range(count)] if config.movies_on else [None] * count
    return [
        TruthTilt(
            stack_index=i, acquisition_order=i, nominal_tilt_deg=round(float(nominal[i]), 4),
            y_tilt_deg=float(nominal[i] + tilt_offset), x_tilt_deg=scale * config.x_tilt_deg,
            z_rot_deg=z_rot, shift_x_a=float(shifts[i, 0]), shift_y_a=float(shifts[i, 1]),
            defocus_u_a=float(defoci[i] + config.astigmatism_a / 2),
            defocus_v_a=float(defoci[i] - config.astigmatism_a / 2),
            astigmatism_angle_deg=float(astig_angle[i] % 180.0),
            pre_exposure_e_a2=float(pre[i]), dose_e_a2=config.dose_per_tilt_e_a2,
            drift_px=None if drifts[i] is None else drifts[i].tolist(),
        )
        for i in range(count)
    ]


def _pad_px(config: SimConfig) -> int:
    """Padding that holds the CTF's delocalisation at Nyquist and the largest drift."""
    wavelength_a = electron_wavelength_a(config.voltage_kv)
    defocus_a = config.defocus_a + 4 * config.defocus_sigma_a + config.thickness_a
    delocalisation_px = wavelength_a * defocus_a / (2 * config.pixel_size_a**2)
    drift_px = config.drift_total_px if config.movies_on else 0.0
    return int(np.ceil(max(delocalisation_px, drift_px))) + 8


def _form_images(config: SimConfig, specimen: Specimen, tilts: list[TruthTilt],
                 rng: np.random.Generator, xray_rng: np.random.Generator) -> dict[str, np.ndarray]:
    size = config.image_size_px
    shape = (size, size)
    pad = _pad_px(config)
    ctf_common = {"voltage_kv": config.voltage_kv,
                  "spherical_aberration_mm": config.spherical_aberration_mm,
                  "amplitude_contrast": config.amplitude_contrast}
    stack = np.empty((len(tilts), size, size), dtype=np.float32)
    projections = np.empty_like(stack)
    noise_free = np.empty_like(stack)
    frames = []
    occupied = occupancy_blocks(specimen.volume_v)
    slab_a = config.ctf_slab_a or imaging.auto_slab_a(config.pixel_size_a, config.voltage_kv)
    for index, tilt in enumerate(tilts):
        matrix = tilt.projection_matrix()
        slabs, heights_a = project_volume_slabs(specimen.volume_v, matrix, config.pixel_size_a,
                                                shape, slab_a, occupied)
        projections[index] = slabs.sum(axis=0)
        ctf = {**ctf_common, "defocus_u_a": tilt.defocus_u_a, "defocus_v_a": tilt.defocus_v_a,
               "astigmatism_angle_deg": tilt.astigmatism_angle_deg}
        exposure = tilt.pre_exposure_e_a2 + tilt.dose_e_a2 / 2 if config.damping_on else None
        contrast = imaging.contrast_image(slabs, heights_a, config.pixel_size_a, ctf, exposure,
                                          pad, config.ctf_on)
        ice_path_a = config.thickness_a / abs(matrix[2, 2])
        expected = imaging.expected_counts(contrast, ice_path_a, config.ice_mean_free_path_a,
                                           tilt.dose_e_a2, config.pixel_size_a)
        noise_free[index] = imaging.crop(expected, pad, shape)
        if config.movies_on:
            drift = np.array(tilt.drift_px)
            movie = imaging.movie_frames(expected, pad, shape, drift, config.noise_on, rng)
            if config.xrays_per_tilt:
                hit_frames, hits = imaging.add_xrays(movie, config.xrays_per_tilt,
                                                     config.xray_strength, xray_rng)
                tilt.xray_frames = hit_frames.tolist()
                tilt.xrays_px = np.rint(hits - drift[hit_frames]).astype(int).tolist()
            frames.append(movie)
            stack[index] = imaging.align_and_sum_frames(movie, drift, pad)
        elif config.noise_on:
            stack[index] = rng.poisson(noise_free[index]).astype(np.float32)
        else:
            stack[index] = noise_free[index]
        if config.xrays_per_tilt and not config.movies_on:
            _, hits = imaging.add_xrays(stack[index:index + 1], config.xrays_per_tilt,
                                        config.xray_strength, xray_rng)
            tilt.xrays_px = hits.tolist()
    return {"stack": stack, "projections": projections, "noise_free": noise_free,
            "frames": frames}


def _mdoc(config: SimConfig, name: str, tilts: list[TruthTilt]) -> str:
    entries = [
        MdocTilt(tilt_deg=t.nominal_tilt_deg, dose_e_a2=t.dose_e_a2,
                 defocus_a=0.5 * (t.defocus_u_a + t.defocus_v_a),
                 target_defocus_a=config.defocus_a, frame_file=t.movie_file,
                 n_frames=config.n_frames if t.movie_file else None)
        for t in tilts
    ]
    size = config.image_size_px
    return mdoc_text(f"{name}.mrc", (size, size), config.pixel_size_a, config.tilt_axis_deg,
                     config.voltage_kv, entries)


def _truth(config: SimConfig, name: str, seed: int, preset: str, specimen: Specimen,
           tilts: list[TruthTilt], result: SimulatedSeries, out_dir: Path) -> SeriesTruth:
    size = config.image_size_px
    depth, _, _ = specimen.volume_v.shape
    acquisition = Acquisition(
        pixel_size_a=config.pixel_size_a, voltage_kv=config.voltage_kv,
        spherical_aberration_mm=config.spherical_aberration_mm,
        amplitude_contrast=config.amplitude_contrast,
        dose_per_tilt_e_a2=config.dose_per_tilt_e_a2, tilt_axis_deg=config.tilt_axis_deg)

    def relative(path: Path | None) -> str | None:
        return None if path is None else path.relative_to(out_dir).as_posix()

    return SeriesTruth(
        name=name, seed=seed, preset=preset, pixel_size_a=config.pixel_size_a,
        image_size_xy=(size, size), tomogram_size_xyz=(size, size, depth),
        thickness_a=config.thickness_a, acquisition=acquisition,
        nominal_tilt_axis_deg=config.tilt_axis_deg, nominal_defocus_a=config.defocus_a,
        tilt_scheme=config.tilt_scheme, stack_file=relative(result.stack_path),
        mdoc_file=relative(result.mdoc_path), volume_file=relative(result.volume_path),
        projections_file=relative(result.projections_path),
        noise_free_file=relative(result.noise_free_path), tilts=tilts,
        placed_particles=[
            TruthParticle(template=p.template, position_a=tuple(map(float, p.position_a)),
                          rotation=np.asarray(p.rotation).tolist(), radius_a=p.radius_a,
                          membrane_id=p.membrane_id,
                          normal=None if p.normal is None else tuple(map(float, p.normal)))
            for p in specimen.particles
        ],
        beads_a=[tuple(map(float, b)) for b in specimen.beads_a],
        bead_diameter_a=config.bead_diameter_a,
        vesicles=[TruthVesicle(centre_a=tuple(map(float, v.centre_a)),
                               radii_a=tuple(map(float, v.radii_a))) for v in specimen.vesicles],
        config=config.model_dump(mode="json"),
    )
