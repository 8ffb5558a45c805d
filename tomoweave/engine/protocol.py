"""The Protocol base class: one typed declaration of parameters, inputs, outputs and citations.

A protocol reads like a form. The engine maps ``process`` over the items of the mapped input
(or over the tasks returned by ``plan`` for protocols without one) on an executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from tomoweave.engine.programs import Program


def param(default: Any = ..., *, unit: str = "", help: str = "", cli: str | None = None,
          choices: list[str] | None = None, **bounds: Any) -> Any:
    """Declare a protocol parameter: default, bounds (ge/gt/le/lt), unit and help text.

    ``cli`` is an extra command-line flag (e.g. ``"--cs"``); ``choices`` lists allowed strings.
    """
    extra: dict[str, Any] = {"unit": unit}
    if cli:
        extra["cli"] = cli
    if choices:
        extra["choices"] = choices
    return Field(default, description=help, json_schema_extra=extra, **bounds)


@dataclass(frozen=True)
class Input:
    """An input of a protocol: the item type it accepts and how the engine feeds it."""

    item_type: type[BaseModel]
    mapped: bool = True
    optional: bool = False
    multiple: bool = False
    help: str = ""


@dataclass(frozen=True)
class Output:
    """An output set of a protocol and the item type it holds."""

    item_type: type[BaseModel]
    help: str = ""


@dataclass
class Task:
    """One unit of work: a unique key (usually the tilt-series name) and a JSON-able payload."""

    key: str
    payload: Any
    sources: list[tuple[int, str]] = field(default_factory=list)
    size: int | None = None  # items the task covers, for re-runs on growth (stream_rerun_param)


class NoParams(BaseModel):
    """For protocols without parameters."""


class Protocol:
    """Base class of every protocol. Subclasses set the class attributes and ``process``."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    inputs: ClassVar[dict[str, Input]] = {}
    outputs: ClassVar[dict[str, Output]] = {}
    citations: ClassVar[list[str]] = []
    programs: ClassVar[tuple[Program, ...]] = ()  # external programs process() runs
    # Streaming of a task that covers a whole growing input (an early average): the parameter
    # holding N. While the input is open, the task runs again once its ``Task.size`` has grown
    # by N since its last run (N = 0: not while streaming); when the input closes it runs
    # once more if it grew, so the final output covers every item.
    stream_rerun_param: ClassVar[str | None] = None

    @classmethod
    def missing_programs(cls, project_root: str | Path | None = None) -> list[Program]:
        """The external programs this protocol calls that are not found here."""
        return [p for p in cls.programs if p.locate(project_root) is None]

    @classmethod
    def mapped_input(cls) -> str | None:
        """Name of the input whose items ``process`` is mapped over, if any."""
        for name, spec in cls.inputs.items():
            if spec.mapped and not spec.multiple:
                return name
        return None

    def plan(self, params: BaseModel, inputs: dict[str, Any]) -> list[Task]:
        """The tasks of a run. Default: one task per item of the mapped input."""
        mapped = self.mapped_input()
        if mapped is None:
            raise NotImplementedError(f"{self.name}: protocols without a mapped input define plan()")
        return [Task(key=item.name, payload=item) for item in inputs.get(mapped, [])]

    def still_producing(self, params: BaseModel, idle_seconds: float) -> bool:
        """True while a source protocol may still find new tasks (e.g. watching a folder);
        ``idle_seconds`` is the time since the last new task appeared."""
        return False

    def process(self, item: Any, params: BaseModel, context: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{self.name} does not implement process()")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Everything a form, the CLI help or the docs need, as plain data."""
        return {
            "name": cls.name,
            "label": cls.label or cls.name,
            "description": (cls.description or cls.__doc__ or "").strip(),
            "params": cls.Params.model_json_schema(),
            "inputs": {n: {"type": s.item_type.__name__, "mapped": s.mapped, "optional": s.optional,
                           "multiple": s.multiple, "help": s.help} for n, s in cls.inputs.items()},
            "outputs": {n: {"type": s.item_type.__name__, "help": s.help}
                        for n, s in cls.outputs.items()},
            "citations": list(cls.citations),
            "programs": [{"name": p.name, "family": p.family, "needs": list(p.needs)}
                         for p in cls.programs],
        }
