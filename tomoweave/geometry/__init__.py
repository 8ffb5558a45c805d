"""Frames, projection model, Euler conventions, coordinate origins and binning.

The one place where a sign or an origin is decided. Everything else calls these functions.
"""

from tomoweave.geometry.coordinates import (
    bin_pixel_size_a,
    center_index,
    centered_a_to_pixels,
    pixels_to_centered_a,
)
from tomoweave.geometry.euler import (
    dynamo_zxz_to_matrices,
    dynamo_zxz_to_matrix,
    eman_to_matrix,
    matrices_to_dynamo_zxz,
    matrices_to_relion_zyz,
    matrix_to_dynamo_zxz,
    matrix_to_eman,
    matrix_to_relion_zyz,
    relion_zyz_to_matrices,
    relion_zyz_to_matrix,
)
from tomoweave.geometry.projection import (
    project_points_a,
    projection_matrices,
    projection_matrix,
)
from tomoweave.geometry.rotations import (
    rotation_angle_between_deg,
    rotation_x,
    rotation_y,
    rotation_z,
)

__all__ = [
    "bin_pixel_size_a",
    "center_index",
    "centered_a_to_pixels",
    "pixels_to_centered_a",
    "dynamo_zxz_to_matrices",
    "dynamo_zxz_to_matrix",
    "matrices_to_dynamo_zxz",
    "matrices_to_relion_zyz",
    "relion_zyz_to_matrices",
    "eman_to_matrix",
    "matrix_to_dynamo_zxz",
    "matrix_to_eman",
    "matrix_to_relion_zyz",
    "relion_zyz_to_matrix",
    "project_points_a",
    "projection_matrices",
    "projection_matrix",
    "rotation_angle_between_deg",
    "rotation_x",
    "rotation_y",
    "rotation_z",
]
