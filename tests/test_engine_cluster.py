"""The dask executor's cluster from the project's cluster.yaml (issue 13, item 4): SLURM/PBS
job scripts written by the real dask-jobqueue, joining a running scheduler, and bad configs
refused with one line, and a run whose workers are jobs of a real single-node SLURM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tomoweave.api import Project
from tomoweave.engine.cluster import CLUSTER_FILE, job_cluster, read_cluster_config
from tomoweave.engine.errors import InputError
from tomoweave.formats.mrc import read_mrc

SLURM_CONFIG = """kind: slurm
queue: short
account: cryoem
cores: 4
memory: 16GB
walltime: "02:00:00"
jobs: 3
"""


def test_slurm_job_script_follows_the_project_config(tmp_path):
    pytest.importorskip("dask_jobqueue")
    (tmp_path / CLUSTER_FILE).write_text(SLURM_CONFIG)
    config = read_cluster_config(tmp_path)
    assert config.kind == "slurm" and config.jobs == 3
    cluster = job_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p short", "#SBATCH -A cryoem", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 02:00:00"):
        assert line in script, script
    assert "#SBATCH --mem=15G" in script or "#SBATCH --mem=16G" in script, script
    assert "distributed.cli.dask_worker" in script or "dask-worker" in script \
        or "dask worker" in script


def test_a_bad_cluster_config_is_one_line_naming_file_and_field(tmp_path):
    (tmp_path / CLUSTER_FILE).write_text("kind: slurm\ncores: zero\n")
    with pytest.raises(InputError, match=r"cluster.yaml: field 'cores'") as caught:
        read_cluster_config(tmp_path)
    assert "\n" not in str(caught.value)
    (tmp_path / CLUSTER_FILE).write_text("kind: lsf\n")
    with pytest.raises(InputError, match="field 'kind'"):
        read_cluster_config(tmp_path)
    assert read_cluster_config(tmp_path / "elsewhere") is None


def test_joining_a_running_scheduler_gives_the_local_result(tmp_path, stack_factory):
    from distributed import LocalCluster

    project = Project.init(tmp_path / "project")
    stacks = [stack_factory(f"TS_{i:02d}", n_tilts=7, seed=i) for i in range(2)]
    project.run("import.tiltseries", params={"files": [str(s) for s in stacks],
                                             "dose_per_tilt_e_a2": 3.0},
                name="import", executor="inline")
    local = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                        params={"binning": 2}, executor="local", workers=1)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        (project.root / CLUSTER_FILE).write_text(f"scheduler: {cluster.scheduler_address}\n")
        joined = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                             params={"binning": 2}, executor="dask")
    assert joined.state == "finished"
    by_name = lambda run: sorted(project.items(run), key=lambda ts: ts.name)  # noqa: E731
    for a, b in zip(by_name(local), by_name(joined), strict=True):
        np.testing.assert_array_equal(read_mrc(project.path(a.tilts[0].image_path))[0],
                                      read_mrc(project.path(b.tilts[0].image_path))[0])


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    import slurm_node

    reason = slurm_node.unavailable_reason()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("dask_jobqueue")
    environment, pids = slurm_node.start(tmp_path / "slurm")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    try:
        yield tmp_path / "slurm"
    finally:
        slurm_node.stop(pids)


@pytest.mark.slow
def test_a_run_whose_workers_are_slurm_jobs_equals_the_local_run(tmp_path, stack_factory,
                                                                 slurm):
    import tomoweave

    project = Project.init(tmp_path / "project")
    stacks = [stack_factory(f"TS_{i:02d}", n_tilts=7, seed=i) for i in range(2)]
    project.run("import.tiltseries", params={"files": [str(s) for s in stacks],
                                             "dose_per_tilt_e_a2": 3.0},
                name="import", executor="inline")
    local = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                        params={"binning": 2}, executor="local", workers=1)
    source = Path(tomoweave.__file__).resolve().parents[1]  # the jobs import this checkout
    (project.root / CLUSTER_FILE).write_text(f"""kind: slurm
queue: short
cores: 1
memory: 900MB
walltime: "00:10:00"
jobs: 2
job_script_prologue: ["export PYTHONPATH={source}"]
local_directory: {tmp_path / 'dask'}
""")
    on_slurm = project.run("tiltseries.bin", inputs={"tilt_series": "import"},
                           params={"binning": 2}, executor="dask")
    assert on_slurm.state == "finished"
    allocated = (slurm / "log" / "slurmctld.log").read_text().count("sched: Allocate JobId")
    assert allocated >= 1  # the workers really were SLURM jobs
    by_name = lambda run: sorted(project.items(run), key=lambda ts: ts.name)  # noqa: E731
    for a, b in zip(by_name(local), by_name(on_slurm), strict=True):
        np.testing.assert_array_equal(read_mrc(project.path(a.tilts[0].image_path))[0],
                                      read_mrc(project.path(b.tilts[0].image_path))[0])
