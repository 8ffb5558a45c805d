"""A single-node SLURM for the tests, from Debian's slurm-wlm and munge: its own slurm.conf,
state and logs in a temporary folder, its own ports; the daemons it starts are stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CTLD_PORT, SLURMD_PORT = 6917, 6918  # not the defaults: a site's SLURM is left alone
START_SECONDS = 60.0


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "a test SLURM needs root (slurmd)"
    for program in ("slurmctld", "slurmd", "sbatch", "sinfo", "munged", "munge"):
        if shutil.which(program) is None:
            return f"{program} not found: `make system-packages` installs slurm-wlm and munge"
    return None


def start(folder: Path) -> tuple[dict[str, str], list[int]]:
    """Start munged (if no munge daemon answers), slurmctld and slurmd; the environment that
    points sbatch & co at this node, and the pids to stop."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=tomoweave
SlurmctldHost={host}
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName={host} CPUs={os.cpu_count() or 1} RealMemory=2000 State=UNKNOWN
PartitionName=short Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    environment = {**os.environ, "SLURM_CONF": str(conf)}
    pids: list[int] = []
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["munged", "--force", "--pid-file", str(folder / "munged.pid")],
                       check=True, capture_output=True)
        pids.append(_pid(folder / "munged.pid"))
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], env=environment, check=True,
                       capture_output=True)
        pids.append(_pid(folder / f"{daemon}.pid"))
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=environment,
                               capture_output=True, text=True).stdout.strip()
        if state == "idle":
            return {"SLURM_CONF": str(conf)}, pids
        time.sleep(0.5)
    stop(pids)
    raise RuntimeError(f"the test SLURM node never became idle (see {folder}/log)")


def stop(pids: list[int]) -> None:
    """SIGTERM to each daemon started here, SIGKILL to any still alive 10 s later."""
    for pid in reversed(pids):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pid(path: Path) -> int:
    deadline = time.monotonic() + 10
    while not path.is_file() or not path.read_text().strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.1)
    return int(path.read_text().split()[0])
