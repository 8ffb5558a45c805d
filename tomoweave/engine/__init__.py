"""Protocols, their registry, executors, the scheduler with its step journal, and provenance."""

from tomoweave.engine.context import ProcessContext
from tomoweave.engine.errors import InputError, ItemError, TomoweaveError
from tomoweave.engine.programs import MissingProgramError, Program
from tomoweave.engine.protocol import Input, Output, Protocol, Task, param
from tomoweave.engine.registry import get_protocol, protocols, register_protocol

__all__ = [
    "Input",
    "InputError",
    "ItemError",
    "MissingProgramError",
    "Output",
    "ProcessContext",
    "Program",
    "Protocol",
    "Task",
    "TomoweaveError",
    "get_protocol",
    "param",
    "protocols",
    "register_protocol",
]
