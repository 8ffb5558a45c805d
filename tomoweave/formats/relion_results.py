"""Results of RELION 3.1 runs: ``*_model.star`` (refinement/classification), ``*_data.star``
(particle poses) and ``postprocess.star``, read into plain records of tomoweave's units.

The FSC records have the fields of ``model.FscShell`` (``shell``, ``frequency_inv_a``,
``resolution_a``, ``fsc`` and, for post-processing, ``fsc_unmasked``, ``fsc_masked``,
``fsc_phase_randomised``): RELION's ``rlnResolution`` is a frequency in 1/Å,
``rlnAngstromResolution`` its inverse; RELION writes 999 Å at the origin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tomoweave.formats.star_io import (
    StarFormatError,
    numeric_column,
    read_star_blocks,
    require_columns,
    star_table,
)

POSTPROCESS_CURVES = {  # FscShell field -> postprocess.star column
    "fsc": "rlnFourierShellCorrelationCorrected",
    "fsc_unmasked": "rlnFourierShellCorrelationUnmaskedMaps",
    "fsc_masked": "rlnFourierShellCorrelationMaskedMaps",
    "fsc_phase_randomised": "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps",
}


@dataclass
class RelionClass:
    """One class (or the one map of a refinement) of a model.star."""

    number: int
    reference: str
    distribution: float
    accuracy_rotations_deg: float | None
    accuracy_translations_a: float | None
    estimated_resolution_a: float | None
    fsc: list[dict] = field(default_factory=list)  # rlnGoldStandardFsc (auto-refine halves)


@dataclass
class RelionModel:
    resolution_a: float | None  # rlnCurrentResolution
    pixel_size_a: float
    box_px: int
    classes: list[RelionClass]


@dataclass
class RelionPostprocess:
    resolution_a: float  # rlnFinalResolution
    bfactor_a2: float | None
    randomise_from_a: float | None
    fsc: list[dict]


def _general(path: Path, blocks: dict, name: str) -> dict:
    general = blocks.get(name)
    if isinstance(general, pd.DataFrame) and len(general) == 1:
        general = general.iloc[0].to_dict()
    if not isinstance(general, dict):
        raise StarFormatError(f"{path.name}: no data_{name} block (is it a RELION "
                              f"{'postprocess' if name == 'general' else 'model'}.star?)")
    return general


def _number(path: Path, block: str, values: dict, key: str, *, optional: bool = False):
    if key not in values:
        if optional:
            return None
        raise StarFormatError(f"{path.name}: data_{block}: _{key} missing")
    try:
        value = float(values[key])
    except (TypeError, ValueError):
        raise StarFormatError(f"{path.name}: data_{block}: _{key} {values[key]!r} is not a "
                              f"number") from None
    return value if np.isfinite(value) else None


def _shells(path: Path, block: str, table: pd.DataFrame, curves: dict[str, str],
            optional: tuple[str, ...] = ()) -> list[dict]:
    require_columns(table, ("rlnSpectralIndex", "rlnResolution",
                            *(c for k, c in curves.items() if k not in optional)),
                    path, block, "the FSC curve")
    index = numeric_column(table, "rlnSpectralIndex", path, block).astype(int).to_numpy()
    frequency = numeric_column(table, "rlnResolution", path, block).to_numpy(float)
    values = {k: numeric_column(table, c, path, block).to_numpy(float)
              for k, c in curves.items() if c in table.columns}
    rows = []
    for row, shell in enumerate(index):
        record = {"shell": int(shell), "frequency_inv_a": float(frequency[row]),
                  "resolution_a": float(1.0 / frequency[row]) if frequency[row] > 0 else None}
        record.update({k: float(v[row]) for k, v in values.items()})
        rows.append(record)
    return rows


def read_model_star(path: str | Path) -> RelionModel:
    """A relion_refine ``*_model.star``: resolution, pixel size, box and its classes.

    Raises
    ------
    StarFormatError
        Naming the file, block and column when one RELION always writes is missing.
    """
    path = Path(path)
    blocks = read_star_blocks(path)
    general = _general(path, blocks, "model_general")
    classes_table = star_table(path, "model_classes", blocks)
    require_columns(classes_table, ("rlnReferenceImage", "rlnClassDistribution"), path,
                    "model_classes", "the classes")
    classes = []
    for row in range(len(classes_table)):
        values = classes_table.iloc[row].to_dict()
        number = row + 1
        per_class = blocks.get(f"model_class_{number}")
        fsc = []
        if isinstance(per_class, pd.DataFrame) and "rlnGoldStandardFsc" in per_class.columns:
            fsc = _shells(path, f"model_class_{number}", per_class, {"fsc": "rlnGoldStandardFsc"})
        classes.append(RelionClass(
            number=number, reference=str(values["rlnReferenceImage"]),
            distribution=float(values["rlnClassDistribution"]),
            accuracy_rotations_deg=_number(path, "model_classes", values,
                                           "rlnAccuracyRotations", optional=True),
            accuracy_translations_a=_number(path, "model_classes", values,
                                            "rlnAccuracyTranslationsAngst", optional=True),
            estimated_resolution_a=_number(path, "model_classes", values,
                                           "rlnEstimatedResolution", optional=True),
            fsc=fsc))
    return RelionModel(
        resolution_a=_number(path, "model_general", general, "rlnCurrentResolution"),
        pixel_size_a=float(_number(path, "model_general", general, "rlnPixelSize")),
        box_px=int(_number(path, "model_general", general, "rlnOriginalImageSize")),
        classes=classes)


def read_postprocess_star(path: str | Path) -> RelionPostprocess:
    """relion_postprocess's ``postprocess.star``: final resolution, B-factor and FSC curves
    (corrected, unmasked, masked, phase-randomised)."""
    path = Path(path)
    blocks = read_star_blocks(path)
    general = _general(path, blocks, "general")
    table = star_table(path, "fsc", blocks)
    fsc = _shells(path, "fsc", table, POSTPROCESS_CURVES,
                  optional=("fsc_masked", "fsc_phase_randomised"))
    resolution = _number(path, "general", general, "rlnFinalResolution")
    if resolution is None or resolution <= 0:
        raise StarFormatError(f"{path.name}: data_general: _rlnFinalResolution "
                              f"{general.get('rlnFinalResolution')!r} is not a resolution")
    return RelionPostprocess(
        resolution_a=resolution,
        bfactor_a2=_number(path, "general", general, "rlnBfactorUsedForSharpening",
                           optional=True),
        randomise_from_a=_number(path, "general", general, "rlnRandomiseFrom", optional=True),
        fsc=fsc)
