"""Worker processes see the environment of the moment a task is submitted, not the one of the
moment the forkserver started (an earlier run of the same Python session): a program found
through an environment variable set between two runs must be found by the workers too."""

import os

from tomoweave.engine.executors import LocalExecutor

VARIABLE = "TOMOWEAVE_TEST_ENVIRONMENT_PROBE"


def test_local_workers_see_the_environment_at_submission(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    first = LocalExecutor(1)
    try:  # starts the forkserver without the variable
        assert first.submit(os.getenv, VARIABLE).result(timeout=120) is None
    finally:
        first.shutdown()
    monkeypatch.setenv(VARIABLE, "set after the forkserver started")
    second = LocalExecutor(1)
    try:
        assert second.submit(os.getenv, VARIABLE).result(timeout=120) == \
            "set after the forkserver started"
        monkeypatch.delenv(VARIABLE)
        assert second.submit(os.getenv, VARIABLE).result(timeout=120) is None
    finally:
        second.shutdown()
