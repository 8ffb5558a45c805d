"""The real RELION 5.1 (Debian sid's ``relion`` package) in a Debian sid chroot, for tests.

Debian 12's libc is too old for sid's RELION 5, so ``make relion5`` bootstraps a minimal sid
into ``.relion5/`` (or ``$TOMOWEAVE_RELION5_ROOT``; see DEVELOPERS.md). ``run_relion5`` runs one
program in it: inside a private mount namespace (``unshare --mount``) it bind-mounts /proc, /dev
and the test's work folder at the same path inside the chroot, runs the program from a folder
there, and unmounts. The mounts exist only in that namespace, so they vanish with it even when
the program crashes or is killed: nothing is ever left mounted on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELION5_ROOT = Path(os.environ.get("TOMOWEAVE_RELION5_ROOT", REPO / ".relion5"))
STAMP = ".tomoweave-relion5"  # written by `make relion5` once the chroot is complete

# Runs in the new namespace: $1 chroot, $2 folder to share, $3 working folder, then the command.
_NAMESPACE_SCRIPT = r"""
set -e
root=$1; work=$2; cwd=$3; shift 3
mkdir -p "$root$work"
mount --bind /proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$work" "$root$work"
trap 'cd /; umount "$root$work" "$root/dev" "$root/proc"' EXIT
set +e
chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$cwd" "$@"
"""


def relion5_unavailable() -> str | None:
    """Why the RELION 5 chroot cannot be used here, or None when it can."""
    if os.geteuid() != 0:
        return "the RELION 5 tests chroot into .relion5 and bind-mount folders: they need root"
    missing = [tool for tool in ("unshare", "chroot", "mount") if shutil.which(tool) is None]
    if missing:
        return f"the RELION 5 tests need {', '.join(missing)} (util-linux, coreutils)"
    if not (RELION5_ROOT / STAMP).is_file():
        return (f"no RELION 5 chroot at {RELION5_ROOT}: `make relion5` builds it (root and "
                f"debootstrap from Debian's packages; `make test` does it when it can)")
    return None


def relion5_version() -> str:
    return (RELION5_ROOT / STAMP).read_text().strip()


@dataclass
class Relion5Result:
    command: list[str]
    returncode: int
    log: Path

    @property
    def error(self) -> str:
        """RELION's last lines (its ERROR messages end the output)."""
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines()
                 if line.strip() and "\x1b" not in line]
        return " | ".join(lines[-4:])


def run_relion5(command: list[str], *, share: Path, cwd: Path, log: Path,
                timeout_s: float = 600) -> Relion5Result:
    """Run ``command`` (a RELION program and its arguments) from ``cwd`` inside the chroot.

    ``share`` is the folder bind-mounted at the same path, so every path under it means the same
    inside and out; ``cwd`` must be in it. The output goes to ``log``.
    """
    share, cwd = share.resolve(), cwd.resolve()
    if share not in (cwd, *cwd.parents):
        raise ValueError(f"{cwd} is not inside the shared folder {share}")
    with open(log, "w") as out:
        out.write(f"$ (cd {cwd} && {' '.join(command)})\n")
        out.flush()
        completed = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT,
             "sh", str(RELION5_ROOT), str(share), str(cwd), *command],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout_s,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                 "OMP_NUM_THREADS": "2", "LANG": "C.UTF-8"})
    return Relion5Result(command, completed.returncode, log)


def host_mounts_under(root: Path = RELION5_ROOT) -> list[str]:
    """Mount points of the host inside the chroot (there must be none after a test)."""
    prefix = str(root.resolve())
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
