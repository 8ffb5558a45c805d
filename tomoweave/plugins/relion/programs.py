"""RELION's executables and MPI: descriptors and the command prefix of an MPI run."""

from __future__ import annotations

import os

from tomoweave.engine.programs import Program

INSTALL_HINT = ("apt-get install relion (Debian/Ubuntu: RELION 3.1), or build RELION from "
                "https://github.com/3dem/relion")
_VERSION = r"RELION version:\s*(\S+)"


def _relion(name: str, *, needs: tuple[str, ...] = (), description: str = "") -> Program:
    return Program(name=name, family="RELION", install_hint=INSTALL_HINT,
                   version_pattern=_VERSION, needs=needs, url="https://relion.readthedocs.io",
                   description=description)


RELION_REFINE_MPI = _relion("relion_refine_mpi", needs=("mpi", "threads"),
                            description="3D auto-refinement and classification")
RELION_RECONSTRUCT = _relion("relion_reconstruct", description="reconstruction from poses")
RELION_POSTPROCESS = _relion("relion_postprocess", description="masking, FSC, sharpening")
RELION_MOTIONCORR = _relion("relion_run_motioncorr", needs=("threads",),
                            description="RELION's own motion correction (--use_own)")
MPIRUN = Program(name="mpirun", family="MPI", install_hint="apt-get install openmpi-bin",
                 version_pattern=r"\(Open MPI\)\s*(\S+)", needs=("mpi",),
                 url="https://www.open-mpi.org")


def mpi_command(ranks: int) -> list[str]:
    """``mpirun -n RANKS`` with the options a shared machine needs (more ranks than cores)."""
    return ["mpirun", "-n", str(int(ranks)), "--oversubscribe"]


def mpi_environment() -> dict[str, str]:
    """Open MPI refuses to run as root unless told; containers and CI often are root."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return {}
