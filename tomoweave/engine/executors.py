"""Executors: where the tasks of a run are computed. The scheduler only submits and collects.

- ``inline``: in the scheduler's own process, one after another (debugging, tests).
- ``local``: a process pool on this machine; workers default to the number of cores.
- ``dask``: a ``distributed`` cluster (a local one, or an existing scheduler address, e.g. one
  started on SLURM/PBS through dask-jobqueue).
Protocols do not know which one runs them.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import Any

from tomoweave.engine.errors import TomoweaveError

EXECUTOR_NAMES = ("inline", "local", "dask")


class Executor:
    """Submit callables, wait for any of them, shut down."""

    n_workers: int = 1
    kind: str = ""  # inline, local or dask: how context.map fans out inside a task

    def submit(self, function: Callable, *args: Any) -> Any:
        raise NotImplementedError

    def wait_any(self, handles: Iterable[Any], timeout: float | None) -> list[Any]:
        """The handles among ``handles`` that are done, waiting up to ``timeout`` seconds."""
        done, _ = futures.wait(list(handles), timeout=timeout, return_when=futures.FIRST_COMPLETED)
        return list(done)

    def shutdown(self) -> None:
        pass

    def threads_per_task(self) -> int:
        return max(1, (os.cpu_count() or 1) // max(1, self.n_workers))


class InlineExecutor(Executor):
    kind = "inline"

    def submit(self, function: Callable, *args: Any) -> futures.Future:
        future: futures.Future = futures.Future()
        try:
            future.set_result(function(*args))
        except BaseException as error:  # surfaced through future.result()
            future.set_exception(error)
        return future

    def threads_per_task(self) -> int:
        return os.cpu_count() or 1


class LocalExecutor(Executor):
    """One single-process pool per worker slot: a worker that dies (``kill -9``, out of
    memory) breaks only its own slot, whose task the scheduler retries; the slot is restarted
    at the next submit and the other workers' tasks go on."""

    kind = "local"

    def __init__(self, n_workers: int | None = None):
        self.n_workers = n_workers or os.cpu_count() or 1
        # forkserver: workers start from a clean process, safe beside threads of the scheduler
        self.context = multiprocessing.get_context("forkserver")
        self.slots = [self._new_pool() for _ in range(self.n_workers)]
        self.running: list[set[futures.Future]] = [set() for _ in range(self.n_workers)]

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(max_workers=1, mp_context=self.context)

    def submit(self, function: Callable, *args: Any) -> futures.Future:
        # The forkserver keeps the environment of the moment it started (often an earlier run in
        # the same Python session); each task gets the submitter's environment of now, so a
        # program found through e.g. TOMOWEAVE_RELION is found by the worker too.
        for running in self.running:
            running.difference_update([f for f in running if f.done()])
        slot = min(range(self.n_workers), key=lambda i: len(self.running[i]))
        try:
            future = self.slots[slot].submit(run_in_environment, dict(os.environ), function, *args)
        except futures.process.BrokenProcessPool:  # its worker died: a fresh one takes over
            self.slots[slot].shutdown(wait=False, cancel_futures=True)
            self.slots[slot] = self._new_pool()
            future = self.slots[slot].submit(run_in_environment, dict(os.environ), function, *args)
        self.running[slot].add(future)
        return future

    def shutdown(self) -> None:
        for pool in self.slots:
            pool.shutdown(wait=True, cancel_futures=True)


def run_in_environment(environment: dict[str, str], function: Callable, *args: Any) -> Any:
    """Run ``function(*args)`` with ``os.environ`` equal to ``environment``."""
    if os.environ != environment:
        os.environ.clear()
        os.environ.update(environment)
    return function(*args)


class DaskExecutor(Executor):
    kind = "dask"

    def __init__(self, n_workers: int | None = None, address: str | None = None,
                 config=None):
        try:
            from distributed import Client, LocalCluster
        except ImportError as error:  # pragma: no cover - distributed is a dependency
            raise TomoweaveError("the dask executor needs the 'distributed' package") from error
        self.n_workers = n_workers or os.cpu_count() or 1
        if config is not None and not address and config.kind != "scheduler":
            from tomoweave.engine.cluster import job_cluster

            self.cluster = job_cluster(config)  # workers are batch jobs (SLURM, PBS)
            self.n_workers = n_workers or config.jobs
            self.cluster.scale(jobs=self.n_workers)
            self.client = Client(self.cluster)
        elif address or config is not None:
            self.cluster = None
            self.client = Client(address or config.scheduler)
        else:
            self.cluster = LocalCluster(n_workers=self.n_workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)

    def submit(self, function: Callable, *args: Any) -> Any:
        return self.client.submit(function, *args, pure=False)

    def wait_any(self, handles: Iterable[Any], timeout: float | None) -> list[Any]:
        from distributed import wait

        handles = list(handles)
        if not handles:
            return []
        try:
            done, _ = wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return list(done)

    def shutdown(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(name: str, n_workers: int | None = None, address: str | None = None, *,
                  project_root=None) -> Executor:
    """The executor called ``name``; ``dask`` joins ``address`` (or $TOMOWEAVE_DASK_SCHEDULER),
    else the cluster of the project's cluster.yaml (engine.cluster), else a local cluster."""
    if name == "inline":
        return InlineExecutor()
    if name == "local":
        return LocalExecutor(n_workers)
    if name == "dask":
        from tomoweave.engine.cluster import read_cluster_config

        return DaskExecutor(n_workers, address or os.environ.get("TOMOWEAVE_DASK_SCHEDULER"),
                            read_cluster_config(project_root))
    raise TomoweaveError(f"unknown executor '{name}': choose one of {', '.join(EXECUTOR_NAMES)}")
