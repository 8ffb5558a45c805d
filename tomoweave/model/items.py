"""Data objects: acquisition, tilt images and series, alignment, CTF, tomograms, particles, maps.

Units are in the names: Å for lengths, degrees for angles, e/Å² for dose, kV, mm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_record(self) -> dict[str, Any]:
        """A flat, JSON-ready dict of this item (what ``show --json`` prints)."""
        return self.model_dump(mode="json")


class Acquisition(BaseModel):
    """Microscope settings shared by all tilts of a series."""

    model_config = ConfigDict(extra="forbid")

    pixel_size_a: float = Field(gt=0, description="pixel size of the images, Å")
    voltage_kv: float = Field(300.0, gt=0, description="acceleration voltage, kV")
    spherical_aberration_mm: float = Field(2.7, ge=0, description="Cs, mm")
    amplitude_contrast: float = Field(0.07, ge=0, le=1, description="fraction of amplitude contrast")
    dose_per_tilt_e_a2: float = Field(0.0, ge=0, description="electron dose per tilt, e/Å²")
    tilt_axis_deg: float = Field(
        0.0, description="nominal tilt-axis angle as SerialEM reports it, °; it is the in-plane "
        "rotation z_rot of the projection model (RELION 5's rule): the tilt axis appears at this "
        "angle counter-clockwise from the image Y axis")


class TiltAlignment(BaseModel):
    """Alignment of one tilt image (RELION 5's parameterisation, see geometry.projection)."""

    model_config = ConfigDict(extra="forbid")

    y_tilt_deg: float
    x_tilt_deg: float = 0.0
    z_rot_deg: float = 0.0
    shift_x_a: float = 0.0
    shift_y_a: float = 0.0
    magnification: float = 1.0
    residual_a: float | None = Field(None, description="mean fiducial residual of this tilt, Å")


class CtfTilt(BaseModel):
    """CTF of one tilt image: defocus at the tilt axis, positive for underfocus."""

    model_config = ConfigDict(extra="forbid")

    defocus_u_a: float
    defocus_v_a: float
    astigmatism_angle_deg: float = 0.0
    phase_shift_deg: float = 0.0
    fit_resolution_a: float | None = None
    score: float | None = None
    diagnostic_path: str | None = None
    reliable: bool = Field(True, description="False when the fit found no Thon rings (the "
                           "defocus is then a stand-in, e.g. the nominal one)")


class TiltImage(BaseModel):
    """One tilt: nominal angle, dose history, where its pixels are, and what was learnt about it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tilt_deg: float = Field(description="nominal (stage) tilt angle, °")
    acquisition_order: int = Field(ge=0, description="0 for the first tilt exposed")
    pre_exposure_e_a2: float = Field(0.0, ge=0, description="dose received before this tilt, e/Å²")
    image_path: str | None = Field(None, description="MRC stack or image holding this tilt")
    image_index: int = Field(0, ge=0, description="slice of image_path holding this tilt")
    movie_path: str | None = Field(None, description="movie of this tilt's frames")
    frame_count: int | None = Field(None, ge=1)
    even_path: str | None = None
    even_index: int = 0
    odd_path: str | None = None
    odd_index: int = 0
    nominal_defocus_a: float | None = Field(None, description="defocus the microscope was set to, Å")
    excluded: bool = False
    alignment: TiltAlignment | None = None
    ctf: CtfTilt | None = None
    drift_px: list[list[float]] | None = Field(None, description="per-frame drift (x, y), px")


class TiltSeries(_Item):
    """A tilt series: its acquisition and its tilts, in the order of the stack."""

    name: str
    acquisition: Acquisition
    image_size_xy: tuple[int, int] = Field(description="size of each tilt image, px (x, y)")
    tilts: list[TiltImage]
    alignment_residual_a: float | None = None
    alignment_error_a: float | None = Field(
        None, description="estimated error of the alignment, Å: half the disagreement of two "
                          "alignments from independent halves of the data (None: not measured)")
    fiducials_a: list[list[float]] | None = Field(None, description="3D bead positions, Å")
    mdoc_path: str | None = None

    @field_validator("tilts")
    @classmethod
    def _has_tilts(cls, tilts: list[TiltImage]) -> list[TiltImage]:
        if not tilts:
            raise ValueError("a tilt series needs at least one tilt")
        return tilts

    @property
    def pixel_size_a(self) -> float:
        return self.acquisition.pixel_size_a

    @property
    def is_aligned(self) -> bool:
        return all(t.alignment is not None for t in self.tilts if not t.excluded)

    def included_tilts(self) -> list[TiltImage]:
        return [t for t in self.tilts if not t.excluded]

    def to_record(self) -> dict[str, Any]:
        """Flat per-tilt records: tilt fields with the alignment and CTF fields beside them."""
        record = self.model_dump(mode="json", exclude={"tilts"})
        record["pixel_size_a"] = self.pixel_size_a
        record["tilt_axis_deg"] = self.acquisition.tilt_axis_deg
        record["tilts"] = [_flat_tilt(t) for t in self.tilts]
        return record


def _flat_tilt(tilt: TiltImage) -> dict[str, Any]:
    flat = tilt.model_dump(mode="json", exclude={"alignment", "ctf"})
    for part in (tilt.alignment, tilt.ctf):
        if part is not None:
            flat.update(part.model_dump(mode="json"))
    return flat


class Tomogram(_Item):
    """A reconstructed volume, with optional even/odd halves for denoising and resolution."""

    name: str
    path: str
    pixel_size_a: float = Field(gt=0)
    size_xyz: tuple[int, int, int]
    tilt_series: str | None = Field(None, description="name of the tilt series it was made from")
    acquisition: Acquisition | None = None
    even_path: str | None = None
    odd_path: str | None = None
    method: str = ""
    binning: float = 1.0
    ctf_corrected: bool = False


class Volume(_Item):
    """A map: a template, a reference, a mask."""

    name: str
    path: str
    pixel_size_a: float = Field(gt=0)
    size_xyz: tuple[int, int, int]
    symmetry: str = "C1"


class FscShell(BaseModel):
    """One Fourier shell of a gold-standard FSC (the curves of algorithms.averaging.fsc)."""

    model_config = ConfigDict(extra="forbid")

    shell: int = Field(ge=0, description="shell index, Fourier voxels from the origin")
    frequency_inv_a: float = Field(ge=0, description="spatial frequency, 1/Å")
    resolution_a: float | None = Field(None, description="1 / frequency, Å (None at 0)")
    fsc: float = Field(description="the FSC whose threshold crossing is the resolution "
                       "(mask-corrected when a mask was used)")
    fsc_unmasked: float | None = None
    fsc_masked: float | None = None
    fsc_phase_randomised: float | None = Field(
        None, description="masked FSC of the half maps phase-randomised beyond the "
        "randomisation shell (Chen et al. 2013)")


class Average(_Item):
    """A subtomogram average: the map, its half maps and mask, and the gold-standard FSC.

    ``path`` is the final (FSC-weighted) map; half maps are unfiltered. Maps are MRC files
    whose header pixel size is ``pixel_size_a``. ``fsc`` holds one :class:`FscShell` per
    shell (0 … box // 2), ``resolution_a`` its crossing of ``fsc_threshold``.
    """

    name: str
    path: str
    pixel_size_a: float = Field(gt=0)
    size_xyz: tuple[int, int, int]
    half1_path: str | None = None
    half2_path: str | None = None
    mask_path: str | None = None
    fsc: list[FscShell] | None = None
    fsc_threshold: float = 0.143
    resolution_a: float | None = Field(None, gt=0, description="gold-standard resolution, Å")
    bfactor_a2: float | None = Field(
        None, description="B-factor of the map corrected by post.sharpen, Å² (positive: the "
        "amplitudes decayed as exp(-B s²/4); RELION's rlnBfactorUsedForSharpening is -B); "
        "None: not sharpened")
    particle_count: int | None = Field(None, ge=0)
    symmetry: str = "C1"
    iterations: list[dict[str, Any]] | None = Field(
        None, description="per-iteration statistics of the refinement that made it "
        "(iteration, resolution_a, angular_step_deg, mean_angular_change_deg, "
        "mean_shift_change_a, seconds, ...)")
    class_id: int | None = Field(None, ge=1, description="the class it averages, from 1 "
                                 "(classification outputs; Particle.class_id of its members)")
    occupancy: float | None = Field(None, ge=0, le=1, description="fraction of the particles "
                                    "in the class (Σ of their posteriors / N)")

    def fsc_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(frequencies 1/Å, FSC) as arrays, empty when there is no curve."""
        shells = self.fsc or []
        return (np.array([s.frequency_inv_a for s in shells], dtype=float),
                np.array([s.fsc for s in shells], dtype=float))


class ClassAverages(_Item):
    """Classes from classification: one average per class."""

    name: str
    class_paths: list[str]
    class_sizes: list[int]
    pixel_size_a: float = Field(gt=0)


class Particle(_Item):
    """A particle in a tomogram: position in Å from the tomogram centre and a rotation matrix."""

    name: str
    tomogram: str = Field(description="name of the tomogram (or tilt series) it belongs to")
    position_a: tuple[float, float, float]
    rotation: list[list[float]] = Field(
        default_factory=lambda: np.eye(3).tolist(),
        description="3×3 active rotation turning the reference into the particle",
    )
    score: float | None = None
    class_id: int | None = None
    membrane_id: int | None = None
    normal: tuple[float, float, float] | None = None
    shift_a: tuple[float, float, float] | None = Field(
        None, description="refined offset (x, y, z) of the particle's centre from the centre "
        "of its subtomogram box, Å in the tomogram frame; position_a + shift_a is the refined "
        "centre. None: never refined")
    half_set: int | None = Field(None, ge=1, le=2, description="gold-standard half set, 1 or 2")
    components: list[float] | None = Field(
        None, description="coordinates on the principal components of average.pca (first "
        "component first)")

    @field_validator("rotation")
    @classmethod
    def _is_rotation(cls, rotation: list[list[float]]) -> list[list[float]]:
        matrix = np.asarray(rotation, dtype=float)
        if matrix.shape != (3, 3) or not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-4):
            raise ValueError("rotation must be a 3×3 orthonormal matrix")
        return rotation

    @property
    def rotation_matrix(self) -> np.ndarray:
        return np.asarray(self.rotation, dtype=float)

    @property
    def refined_position_a(self) -> tuple[float, float, float]:
        """position_a + shift_a: the particle's centre after refinement, Å."""
        if self.shift_a is None:
            return self.position_a
        return tuple(float(p + s) for p, s in zip(self.position_a, self.shift_a, strict=True))


class Subtomogram(_Item):
    """An extracted subvolume of one particle, with its missing-wedge/CTF weight."""

    name: str
    particle: Particle
    path: str
    weight_path: str | None = Field(
        None, description="3D Fourier weight, MRC box³, zero frequency at index box // 2 "
        "(RELION 3.1's rlnCtfImage): Σ CTF² when ctf_premultiplied, else the signed 3D CTF")
    multiplicity_path: str | None = Field(
        None, description="how many tilt slices touched each Fourier voxel (same grid as "
        "weight_path); pseudo-subtomograms only")
    ctf_premultiplied: bool = Field(
        False, description="path holds CTF-premultiplied data (RELION's "
        "rlnCtfDataAreCtfPremultiplied)")
    pixel_size_a: float = Field(gt=0)
    box_size_px: int


class Segmentation(_Item):
    """A labelled volume (e.g. membranes), one label per object."""

    name: str
    path: str
    tomogram: str
    pixel_size_a: float = Field(gt=0)
    label_count: int = 0


def particles_by_tomogram(particles: list[Particle]) -> dict[str, list[Particle]]:
    """Particles grouped by the tomogram they belong to, tomograms in order of first appearance
    (a ParticleTable gives one table per tomogram, without building particle objects)."""
    if hasattr(particles, "by_tomogram"):
        return particles.by_tomogram()
    groups: dict[str, list[Particle]] = {}
    for particle in particles:
        groups.setdefault(particle.tomogram, []).append(particle)
    return groups


_ITEM_TYPES: dict[str, type[_Item]] = {
    cls.__name__: cls
    for cls in (
        TiltSeries, Tomogram, Volume, Average, ClassAverages, Particle, Subtomogram, Segmentation
    )
}


Item = _Item  # the base class of item types, also for plugin packages


def item_types() -> dict[str, type[_Item]]:
    """The item classes that sets can hold, by name: tomoweave's, those of installed plugin
    packages (entry-point group ``tomoweave.item_types``) and those registered at run time."""
    from tomoweave.model.item_registry import plugin_item_types

    return {**plugin_item_types(_ITEM_TYPES), **_ITEM_TYPES}


def item_type_name(item_class: type[BaseModel]) -> str:
    return item_class.__name__
