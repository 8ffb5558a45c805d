"""The cluster the ``dask`` executor uses, from ``cluster.yaml`` in the project folder.

```yaml
# start workers as SLURM (or PBS) jobs through dask-jobqueue
kind: slurm          # slurm | pbs
queue: short         # partition (SLURM) / queue (PBS)
account: myproject
cores: 4             # per job (one dask worker process per job, 1 thread per core)
memory: 16GB         # per job
walltime: "02:00:00"
jobs: 2              # jobs started (workers)
# or join a scheduler that is already running:
# scheduler: tcp://login01:8786
```

Workers must see the project folder at the same path (a shared filesystem): they read inputs
and write outputs there; only the scheduler process writes the catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tomoweave.engine.errors import InputError

CLUSTER_FILE = "cluster.yaml"


class ClusterConfig(BaseModel):
    """What ``cluster.yaml`` may say (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["slurm", "pbs", "scheduler"] = "slurm"
    scheduler: str | None = Field(None, description="address of a running dask scheduler")
    queue: str | None = None
    account: str | None = None
    cores: int = Field(1, ge=1)
    memory: str = "4GB"
    walltime: str = "01:00:00"
    jobs: int = Field(1, ge=1)
    job_extra_directives: list[str] = []
    job_script_prologue: list[str] = Field([], description="shell lines run before the worker "
                                           "starts (activate the environment)")
    local_directory: str | None = None


def read_cluster_config(project_root: str | Path | None) -> ClusterConfig | None:
    """The project's cluster config, or None when it has no ``cluster.yaml``."""
    if project_root is None:
        return None
    path = Path(project_root) / CLUSTER_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
        config = ClusterConfig(**data)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({error})") from None
    except (ValidationError, TypeError) as error:
        first = error.errors()[0] if isinstance(error, ValidationError) else {"loc": (),
                                                                            "msg": str(error)}
        field = ".".join(str(p) for p in first["loc"]) or "file"
        raise InputError(f"{path}: field '{field}': {first['msg']}") from None
    if config.scheduler:
        config = config.model_copy(update={"kind": "scheduler"})
    return config


def job_cluster(config: ClusterConfig) -> Any:
    """A dask-jobqueue cluster (SLURMCluster or PBSCluster) for ``config``, not yet scaled."""
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError("cluster.yaml asks for a job-queue cluster: install dask-jobqueue "
                         "(pip install 'tomoweave[cluster]')") from None
    options: dict[str, Any] = {"cores": config.cores, "processes": 1, "memory": config.memory,
                               "walltime": config.walltime, "queue": config.queue,
                               "account": config.account,
                               "job_extra_directives": config.job_extra_directives,
                               "job_script_prologue": config.job_script_prologue}
    if config.local_directory:
        options["local_directory"] = config.local_directory
    kind = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[config.kind]
    return kind(**options)
