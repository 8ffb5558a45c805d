"""The data objects of tomoweave and their typed sets.

Every object is a pydantic model: validated on creation, stored as JSON in the catalog, and shown
by ``tomoweave show --json`` under these field names. File paths are strings relative to the
project folder.
"""

from tomoweave.model.item_registry import register_item_type
from tomoweave.model.items import (
    Acquisition,
    Average,
    ClassAverages,
    CtfTilt,
    FscShell,
    Item,
    Particle,
    Segmentation,
    Subtomogram,
    TiltAlignment,
    TiltImage,
    TiltSeries,
    Tomogram,
    Volume,
    item_type_name,
    item_types,
    particles_by_tomogram,
)
from tomoweave.model.particle_table import ParticleTable, as_particle_table
from tomoweave.model.sets import SetState

__all__ = [
    "Acquisition",
    "Average",
    "ClassAverages",
    "CtfTilt",
    "FscShell",
    "Item",
    "Particle",
    "ParticleTable",
    "Segmentation",
    "SetState",
    "Subtomogram",
    "TiltAlignment",
    "TiltImage",
    "TiltSeries",
    "Tomogram",
    "Volume",
    "item_type_name",
    "as_particle_table",
    "item_types",
    "particles_by_tomogram",
    "register_item_type",
]
