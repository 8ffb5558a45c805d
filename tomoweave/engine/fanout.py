"""``context.map``: fan the work of one task out over the run's executor.

- ``inline``: a loop in the task's own process;
- ``local``: a process pool over this machine's cores, started at the first call and kept until
  the task ends (an averaging task calls ``map`` once per iteration);
- ``dask``: the cluster's workers, submitted from inside the task through
  ``distributed.worker_client`` (the task's worker thread secedes while it waits, so the same
  workers compute the items).

Results come back in the order of the items. An exception of one item fails the task with an
``ItemError`` naming the item (its index and its ``name`` or a short repr).
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import multiprocessing
import os
import traceback
from collections.abc import Callable
from typing import Any

from tomoweave.engine.errors import ItemError, TomoweaveError
from tomoweave.engine.executors import run_in_environment

INLINE, LOCAL, DASK = "inline", "local", "dask"
_ITEM_TEXT_CHARS = 60


def _call_item(function: Callable, item: Any) -> tuple[bool, Any]:
    """Run one item where it lands; errors come back as text (they may not unpickle)."""
    try:
        return True, function(item)
    except ItemError as error:
        return False, (str(error), None)
    except Exception as error:
        return False, (f"{type(error).__name__}: {error}", traceback.format_exc())


def _limit_worker_threads() -> None:
    """Map workers share the cores between them: one thread each."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # numba missing or configured otherwise: harmless
        pass


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class FanOut:
    """The fan-out of one task (not pickled: each worker builds its own)."""

    def __init__(self, kind: str):
        if kind not in (INLINE, LOCAL, DASK):
            raise TomoweaveError(f"unknown executor kind '{kind}' for context.map")
        self.kind = kind
        self._pool: futures.ProcessPoolExecutor | None = None

    def map(self, function: Callable, items: list) -> list:
        items = list(items)
        if not callable(function):
            raise TomoweaveError(f"context.map needs a function, got {type(function).__name__}")
        if self.kind == DASK and items:
            outcomes = self._map_dask(function, items)
        elif self.kind == LOCAL and len(items) > 1 and available_cores() > 1:
            in_environment = functools.partial(run_in_environment, dict(os.environ), _call_item)
            outcomes = list(self._local_pool().map(in_environment, [function] * len(items), items))
        else:
            outcomes = [_call_item(function, item) for item in items]
        results = []
        for index, (ok, value) in enumerate(outcomes):
            if not ok:
                message, trace = value
                raise ItemError(f"context.map: item {index} ({describe_item(items[index])}) "
                                f"failed: {message}") from (_RemoteTraceback(trace) if trace else None)
            results.append(value)
        return results

    def _local_pool(self) -> futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            self._pool = futures.ProcessPoolExecutor(max_workers=available_cores(),
                                                     mp_context=context,
                                                     initializer=_limit_worker_threads)
        return self._pool

    @staticmethod
    def _map_dask(function: Callable, items: list) -> list:
        from distributed import get_worker, worker_client

        try:
            get_worker()
        except ValueError:  # not inside a dask worker (process called outside the engine)
            return [_call_item(function, item) for item in items]
        with worker_client() as client:
            submitted = client.map(_call_item, [function] * len(items), items, pure=False)
            return client.gather(submitted)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def describe_item(item: Any) -> str:
    name = getattr(item, "name", None)
    text = str(name) if isinstance(name, str) else repr(item)
    return text if len(text) <= _ITEM_TEXT_CHARS else text[:_ITEM_TEXT_CHARS - 1] + "…"


class _RemoteTraceback(Exception):
    """The traceback of an item that failed in another process, shown under the task's error."""

    def __init__(self, text: str):
        super().__init__(text)

    def __str__(self) -> str:
        return self.args[0]
