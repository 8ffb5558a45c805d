"""States of sets, runs and tasks (string enums: stored as their text in the catalog)."""

from __future__ import annotations

from enum import StrEnum


class SetState(StrEnum):
    """A set is open while its producer may still add items (streaming), closed when complete."""

    OPEN = "open"
    CLOSED = "closed"


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FINISHED_WITH_FAILURES = "finished with failures"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # recorded as running, but its scheduler process is gone


class TaskState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
