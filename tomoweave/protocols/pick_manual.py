"""pick.manual: particles placed by hand (in the web viewer), saved through a run for provenance.

The picked positions are a parameter, so the run records exactly what the person clicked; the
web GUI re-runs the same run with the updated list, and resume redoes only what changed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator

from tomoweave.engine import Input, InputError, Output, ProcessContext, Protocol, Task, param
from tomoweave.model import Particle, Tomogram


class ManualPickParams(BaseModel):
    picks: dict[str, list[tuple[float, float, float]]] = param(
        {}, unit="Å", help="picked positions (x, y, z) in Å from the tomogram centre, "
        "per tomogram name, e.g. {\"TS_01\": [[10, -20, 0]]}")

    @field_validator("picks")
    @classmethod
    def _finite(cls, picks: dict[str, list[tuple[float, float, float]]]):
        for name, positions in picks.items():
            for position in positions:
                if any(value != value or abs(value) == float("inf") for value in position):
                    raise ValueError(f"tomogram {name}: position {position} is not finite")
        return picks


class ManualPick(Protocol):
    """Particles picked by hand on tomogram slices; one Particle per click."""

    name = "pick.manual"
    label = "Manual picking"
    description = ("Particles placed by hand in the web viewer's tomogram slices (Å from the "
                   "tomogram centre); the positions are recorded as the run's parameters.")
    Params = ManualPickParams
    inputs = {"tomograms": Input(Tomogram, help="tomograms the particles were picked in")}
    outputs = {"particles": Output(Particle, help="the picked particles (identity orientation)")}

    def plan(self, params: ManualPickParams, inputs: dict[str, Any]) -> list[Task]:
        names = {tomogram.name for tomogram in inputs.get("tomograms", [])}
        unknown = sorted(set(params.picks) - names)
        if unknown:  # a typo would otherwise drop those picks without a word
            raise InputError(f"picks: tomogram '{unknown[0]}' is not among the input tomograms "
                             f"({', '.join(sorted(names)) or 'none'})")
        return super().plan(params, inputs)

    def process(self, item: Tomogram, params: ManualPickParams,
                context: ProcessContext) -> dict[str, Any]:
        positions = params.picks.get(item.name, [])
        half_size_a = [n * item.pixel_size_a / 2 for n in item.size_xyz]
        outside = [p for p in positions
                   if any(abs(v) > h + item.pixel_size_a for v, h in zip(p, half_size_a, strict=True))]
        if outside:
            context.log(f"{item.name}: {len(outside)} picks lie outside the tomogram, kept as given")
        particles = [Particle(name=f"{item.name}_{index:04d}", tomogram=item.name,
                              position_a=tuple(float(v) for v in position))
                     for index, position in enumerate(positions)]
        context.log(f"{item.name}: {len(particles)} particles picked by hand")
        return {"particles": particles}
