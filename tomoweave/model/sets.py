"""Typed sets: the containers that runs write items into."""

from __future__ import annotations

from enum import Enum


class SetState(str, Enum):
    """A set is open while its producer may still add items (streaming), closed when complete."""

    OPEN = "open"
    CLOSED = "closed"
