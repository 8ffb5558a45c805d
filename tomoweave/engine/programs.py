"""External programs: how to find one, read its version, and say how to install it.

A :class:`Program` is declared once by the plugin that drives it (``tomoweave/plugins/<family>/``
or a third-party package) and listed on the protocols that call it (``Protocol.programs``). A
program is looked for, in this order:

1. the family's environment variable, ``TOMOWEAVE_<FAMILY>`` (e.g. ``TOMOWEAVE_RELION``): a
   folder holding the family's executables (or their ``bin/`` folder), or one executable file;
2. a ``programs.toml`` in the project folder, then ``$XDG_CONFIG_HOME/tomoweave/programs.toml``
   (default ``~/.config/tomoweave/programs.toml``), whose keys are program or family names::

       RELION = "/opt/relion-3.1/bin"                       # a folder
       AreTomo2 = "/opt/aretomo/AreTomo2_1.1.2_Cuda118"     # one executable

3. the ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tomoweave.engine.errors import TomoweaveError

CONFIG_NAME = "programs.toml"
VERSION_TIMEOUT_S = 20.0
NEEDS = ("mpi", "threads", "gpu")
_versions: dict[tuple[str, float], str | None] = {}


class MissingProgramError(TomoweaveError):
    """A protocol needs an external program that is not installed (or not configured) here."""


@dataclass(frozen=True)
class Program:
    """One external executable and everything tomoweave needs to know to call it.

    Parameters
    ----------
    name : str
        The executable's usual name, e.g. ``"relion_refine_mpi"``.
    family : str
        The package it belongs to (``"RELION"``, ``"IMOD"``): names the environment variable
        ``TOMOWEAVE_<FAMILY>`` and a key of ``programs.toml``.
    install_hint : str
        One sentence on how to get it, shown when it is missing.
    aliases : tuple of str
        Other executable names of the same program (``AreTomo2`` builds, ``ctffind5``).
    version_args : tuple of str
        Arguments that make it print its version (empty: the version is not read).
    version_pattern : str
        Regular expression whose first group is the version in that output.
    needs : tuple of str
        Any of ``"mpi"``, ``"threads"``, ``"gpu"``.
    url : str
        Its home page.
    """

    name: str
    family: str
    install_hint: str
    aliases: tuple[str, ...] = ()
    version_args: tuple[str, ...] = ("--version",)
    version_pattern: str = r"(\d+\.\d+(?:\.\d+)*)"
    needs: tuple[str, ...] = ()
    url: str = ""
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"program {self.name}: unknown needs {sorted(unknown)} "
                             f"(known: {', '.join(NEEDS)})")

    @property
    def env_var(self) -> str:
        return "TOMOWEAVE_" + re.sub(r"[^A-Z0-9]+", "_", self.family.upper()).strip("_")

    @property
    def executable_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def locate(self, project_root: str | Path | None = None) -> Path | None:
        """The executable's absolute path, or None when it is not found (see the module doc)."""
        configured = os.environ.get(self.env_var)
        if configured:
            return self._in_setting(configured)
        for config in config_files(project_root):
            settings = _read_config(config)
            setting = settings.get(self.name) or settings.get(self.family)
            if setting:
                return self._in_setting(str(setting), config.parent)
        for candidate in self.executable_names:
            found = shutil.which(candidate)
            if found:
                return Path(found).absolute()
        return None

    def _in_setting(self, setting: str, base: Path | None = None) -> Path | None:
        path = Path(os.path.expanduser(setting))
        if base is not None and not path.is_absolute():
            path = Path(os.path.normpath(base / path))
        if path.is_dir():
            for folder in (path, path / "bin"):
                for candidate in self.executable_names:
                    if _is_executable(folder / candidate):
                        return (folder / candidate).absolute()
            return None
        return path.absolute() if _is_executable(path) else None

    def require(self, project_root: str | Path | None = None) -> Path:
        """The executable's path; raises :class:`MissingProgramError` (one line) if missing."""
        path = self.locate(project_root)
        if path is None:
            raise MissingProgramError(self.missing_message())
        return path

    def missing_message(self) -> str:
        return (f"{self.name} ({self.family}) not found: {self.install_hint}; or set "
                f"{self.env_var} to its folder, or name it in {CONFIG_NAME}")

    def version(self, path: str | Path | None = None) -> str | None:
        """The version the program reports (cached per executable and modification time)."""
        path = Path(path) if path is not None else self.locate()
        if path is None or not self.version_args:
            return None
        try:
            key = (str(path), path.stat().st_mtime)
        except OSError:
            return None
        if key not in _versions:
            _versions[key] = _read_version(path, self.version_args, self.version_pattern)
        return _versions[key]

    def describe(self, project_root: str | Path | None = None) -> dict:
        """``name, family, found, path, version, needs, env_var, install_hint, url``."""
        path = self.locate(project_root)
        return {"name": self.name, "family": self.family, "found": path is not None,
                "path": str(path) if path else None,
                "version": self.version(path) if path else None, "needs": list(self.needs),
                "env_var": self.env_var, "install_hint": self.install_hint, "url": self.url}


def config_files(project_root: str | Path | None = None) -> list[Path]:
    """The ``programs.toml`` files that exist, the project's first."""
    candidates = []
    if project_root is not None:
        candidates.append(Path(project_root) / CONFIG_NAME)
    home_config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    candidates.append(Path(home_config) / "tomoweave" / CONFIG_NAME)
    return [c for c in candidates if c.is_file()]


def _read_config(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as stream:
            document = tomllib.load(stream)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise TomoweaveError(f"{path}: cannot read program settings ({error})") from None
    table = document.get("programs", document)
    return {str(k): v for k, v in table.items() if isinstance(v, str)}


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _read_version(path: Path, args: tuple[str, ...], pattern: str) -> str | None:
    try:
        completed = subprocess.run([str(path), *args], capture_output=True, text=True,
                                   timeout=VERSION_TIMEOUT_S, stdin=subprocess.DEVNULL,
                                   errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(pattern, completed.stdout + "\n" + completed.stderr)
    return match.group(1) if match else None
