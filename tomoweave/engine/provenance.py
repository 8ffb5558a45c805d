"""What a run records about where and with what it ran."""

from __future__ import annotations

import getpass
import platform
import socket
import sys
from importlib.metadata import PackageNotFoundError, version

_PACKAGES = ("tomoweave", "numpy", "scipy", "numba", "mrcfile", "pydantic", "starfile", "mdocfile",
             "dask", "distributed")


def environment_provenance() -> dict:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    try:
        user = getpass.getuser()
    except Exception:
        user = None
    return {
        "host": socket.gethostname(),
        "user": user,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
        "command_line": sys.argv,
    }


def programs_provenance(programs, project_root) -> list[dict]:
    """Path and version of each external program a protocol calls, as found at the run's start."""
    records = []
    for program in programs:
        path = program.locate(project_root)
        records.append({"name": program.name, "family": program.family,
                        "path": str(path) if path else None,
                        "version": program.version(path) if path else None})
    return records
