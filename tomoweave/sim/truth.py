"""The ground truth of a simulated tilt series: a JSON file, typed, with converters to the model.

Geometry is exactly tomoweave's: a point at ``position_a`` (Å from the tomogram centre, index
N // 2, x y z) appears in tilt i at image Å ``project_points_a(truth.tilts[i].projection_matrix(),
position_a)``, i.e. pixel ``Å / pixel_size_a + N // 2``. Tilts are listed in stack order, which is
the acquisition order. Defocus values are at the tilt axis (the tomogram centre's height); a
point at image-frame height z (Å, third row of the projection matrix, +z towards the source) is
at defocus ``defocus + z``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from tomoweave.geometry.projection import project_points_a, projection_matrix
from tomoweave.model import Acquisition, CtfTilt, Particle, TiltAlignment

TRUTH_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TruthTilt(_Strict):
    stack_index: int
    acquisition_order: int
    nominal_tilt_deg: float
    y_tilt_deg: float
    x_tilt_deg: float
    z_rot_deg: float
    shift_x_a: float
    shift_y_a: float
    defocus_u_a: float
    defocus_v_a: float
    astigmatism_angle_deg: float
    pre_exposure_e_a2: float
    dose_e_a2: float
    drift_px: list[list[float]] | None = None
    movie_file: str | None = None
    xrays_px: list[list[int]] | None = None  # (x, y) of each X-ray hit, in the stack image
    xray_frames: list[int] | None = None  # frame of each hit when movies are made

    def projection_matrix(self) -> np.ndarray:
        return projection_matrix(self.y_tilt_deg, self.x_tilt_deg, self.z_rot_deg,
                                 self.shift_x_a, self.shift_y_a)

    def alignment(self) -> TiltAlignment:
        return TiltAlignment(y_tilt_deg=self.y_tilt_deg, x_tilt_deg=self.x_tilt_deg,
                             z_rot_deg=self.z_rot_deg, shift_x_a=self.shift_x_a,
                             shift_y_a=self.shift_y_a)

    def ctf(self) -> CtfTilt:
        return CtfTilt(defocus_u_a=self.defocus_u_a, defocus_v_a=self.defocus_v_a,
                       astigmatism_angle_deg=self.astigmatism_angle_deg)


class TruthParticle(_Strict):
    template: str
    position_a: tuple[float, float, float]
    rotation: list[list[float]]
    radius_a: float
    membrane_id: int | None = None
    normal: tuple[float, float, float] | None = None


class TruthVesicle(_Strict):
    centre_a: tuple[float, float, float]
    radii_a: tuple[float, float, float]


class SeriesTruth(_Strict):
    """Everything known about one simulated tilt series."""

    version: int = TRUTH_VERSION
    name: str
    seed: int
    preset: str
    pixel_size_a: float
    image_size_xy: tuple[int, int]
    tomogram_size_xyz: tuple[int, int, int]
    thickness_a: float
    acquisition: Acquisition
    nominal_tilt_axis_deg: float
    nominal_defocus_a: float
    tilt_scheme: str
    defocus_height_convention: str = "defocus(point) = defocus_tilt + z_image_a"
    stack_file: str
    mdoc_file: str
    volume_file: str
    projections_file: str
    noise_free_file: str | None = None
    tilts: list[TruthTilt]
    placed_particles: list[TruthParticle]
    beads_a: list[tuple[float, float, float]]
    bead_diameter_a: float
    vesicles: list[TruthVesicle]
    config: dict

    def projection_matrices(self) -> np.ndarray:
        """Per-tilt 4×4 matrices in stack order, shape (T, 4, 4)."""
        return np.stack([tilt.projection_matrix() for tilt in self.tilts])

    def tilt_alignments(self) -> list[TiltAlignment]:
        return [tilt.alignment() for tilt in self.tilts]

    def ctf_tilts(self) -> list[CtfTilt]:
        return [tilt.ctf() for tilt in self.tilts]

    def particles(self, template: str | None = None) -> list[Particle]:
        """Particles as model objects (of one template, or all), named NAME_pNNNN."""
        return [
            Particle(name=f"{self.name}_p{index:04d}", tomogram=self.name,
                     position_a=p.position_a, rotation=p.rotation, class_id=None,
                     membrane_id=p.membrane_id, normal=p.normal)
            for index, p in enumerate(self.placed_particles)
            if template is None or p.template == template
        ]

    def particle_positions_a(self, template: str | None = None) -> np.ndarray:
        positions = [p.position_a for p in self.placed_particles if template in (None, p.template)]
        return np.array(positions, dtype=float).reshape(-1, 3)

    def beads_px(self, tilt_index: int) -> np.ndarray:
        """Bead centres in pixel indices (x, y) of stack slice ``tilt_index``."""
        image_a = project_points_a(self.tilts[tilt_index].projection_matrix(),
                                   np.array(self.beads_a).reshape(-1, 3))
        return image_a / self.pixel_size_a + np.array(self.image_size_xy) // 2


def load_truth(path: str | Path) -> SeriesTruth:
    """Read a ground-truth JSON written by the simulator."""
    path = Path(path)
    try:
        return SeriesTruth.model_validate_json(path.read_text())
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: ground-truth file not found") from error
    except ValueError as error:
        raise ValueError(f"{path}: not a tomoweave ground-truth file ({error})") from error


def save_truth(truth: SeriesTruth, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(truth.model_dump_json(indent=1))
    temporary.replace(path)
    return path
