"""The human-readable log of a run (``logs/run.log``)."""

from __future__ import annotations

import time
from pathlib import Path


class RunLog:
    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a") as stream:
            for line in str(message).rstrip().splitlines() or [""]:
                stream.write(f"{stamp} {line}\n")
