"""context.run_command: live output, timeout, no process left behind, errors with the output's
last lines; program descriptors: environment variable, programs.toml, PATH, version."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tomoweave.engine.context import ProcessContext
from tomoweave.engine.errors import ItemError
from tomoweave.engine.programs import MissingProgramError, Program

# a shell with a background child (as mpirun starts ranks): neither may outlive a killed command
SLEEPER = 'sleep 60 & echo "$$ $!" > "$0.tmp" && mv "$0.tmp" "$0"; echo started; sleep 60'



class RecordingContext(ProcessContext):
    """A task context that also notes when each log line arrived."""

    def __init__(self, root: Path):
        super().__init__(root, "runs/0001-test", "TS_01")
        self.arrivals: list[tuple[float, str]] = []

    def log(self, message: str) -> None:
        self.arrivals.append((time.monotonic(), str(message)))
        super().log(message)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead, only not yet reaped by its (possibly gone) parent
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_output_reaches_the_log_while_the_program_runs(tmp_path):
    context = RecordingContext(tmp_path)
    script = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    started = time.monotonic()
    completed = context.run_command([sys.executable, "-c", script])
    ended = time.monotonic()
    lines = {text: when for when, text in context.arrivals}
    first = next(when for text, when in lines.items() if text.endswith("first"))
    assert first - started < ended - started - 1.0, "'first' was logged only at the end"
    assert completed.stdout.split() == ["first", "second"]
    (record,) = context.commands
    assert record["command"].startswith(sys.executable) and record["exit_code"] == 0
    assert record["task"] == "TS_01" and record["seconds"] >= 1.5


def test_non_zero_exit_is_an_item_error_with_the_last_lines(tmp_path):
    context = ProcessContext(tmp_path, "runs/0001-test", "TS_01")
    script = ("import sys\nfor i in range(40): print(f'line {i}')\n"
              "print('bad input', file=sys.stderr)\nsys.exit(3)")
    with pytest.raises(ItemError) as caught:
        context.run_command([sys.executable, "-c", script])
    message = str(caught.value)
    assert message.splitlines()[0].startswith("python") and "exited with code 3" in message
    assert "bad input" in message and "line 39" in message and "line 5\n" not in message
    assert context.commands[0]["exit_code"] == 3


def test_timeout_kills_the_program_and_what_it_started(tmp_path):
    context = ProcessContext(tmp_path, "runs/0001-test", "TS_01")
    pids_file = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(ItemError, match="did not finish within 1 s"):
        context.run_command(["sh", "-c", SLEEPER, str(pids_file)], timeout_s=1.0)
    assert time.monotonic() - started < 15
    pids = [int(p) for p in pids_file.read_text().split()]
    assert _wait_gone(pids) == [], "a process of the timed-out command is still running"
    assert context.commands[0]["exit_code"] == "timeout"


def test_killing_the_worker_kills_the_program(tmp_path):
    """The task's process dies by SIGKILL (no cleanup can run): the guard ends the program."""
    pids_file = tmp_path / "pids"
    worker = textwrap.dedent(f"""
        import sys
        from tomoweave.engine.context import ProcessContext
        context = ProcessContext({str(tmp_path)!r}, "runs/0001-test", "TS_01")
        context.run_command(["sh", "-c", {SLEEPER!r}, {str(pids_file)!r}])
    """)
    process = subprocess.Popen([sys.executable, "-c", worker])
    deadline = time.time() + 30
    while not pids_file.exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    pids = [int(p) for p in pids_file.read_text().split()]
    assert _wait_gone(pids) == [], "the program outlived the worker that ran it"


def test_cancel_file_stops_the_program(tmp_path):
    context = ProcessContext(tmp_path, "runs/0001-test", "TS_01")
    context.cancel_path.parent.mkdir(parents=True)
    script = f"import pathlib, time\npathlib.Path({str(context.cancel_path)!r}).touch()\ntime.sleep(60)"
    started = time.monotonic()
    with pytest.raises(ItemError, match="stopped: the run was cancelled"):
        context.run_command([sys.executable, "-c", script])
    assert time.monotonic() - started < 15


def _fake_program(folder: Path, name: str, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho 'fake {name} version {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_program_found_by_environment_then_config_then_path(tmp_path, monkeypatch):
    program = Program(name="tw_fake_tool", family="Fake Suite", install_hint="no way",
                      version_pattern=r"version (\S+)")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home-config"))
    monkeypatch.delenv(program.env_var, raising=False)
    assert program.env_var == "TOMOWEAVE_FAKE_SUITE"
    assert program.locate(tmp_path / "project") is None
    with pytest.raises(MissingProgramError, match="tw_fake_tool .Fake Suite. not found: no way"):
        program.require()

    on_path = _fake_program(tmp_path / "path-bin", "tw_fake_tool", "1.0")
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}{os.environ['PATH']}")
    assert program.locate() == on_path and program.version(on_path) == "1.0"

    user = _fake_program(tmp_path / "user-install" / "bin", "tw_fake_tool", "2.0")
    (tmp_path / "home-config" / "tomoweave").mkdir(parents=True)
    (tmp_path / "home-config" / "tomoweave" / "programs.toml").write_text(
        f'"Fake Suite" = "{user.parent.parent}"\n')
    assert program.locate() == user  # a family folder: its bin/ is searched

    project = tmp_path / "project"
    in_project = _fake_program(tmp_path / "project-tools", "tw_fake_tool", "3.0")
    project.mkdir()
    (project / "programs.toml").write_text('[programs]\ntw_fake_tool = "../project-tools/tw_fake_tool"\n')
    assert program.locate(project) == in_project and program.version(in_project) == "3.0"
    assert program.locate() == user  # without the project, the user's setting

    from_env = _fake_program(tmp_path / "env-tools", "tw_fake_tool", "4.0")
    monkeypatch.setenv("TOMOWEAVE_FAKE_SUITE", str(from_env.parent))
    assert program.locate(project) == from_env
    record = program.describe(project)
    assert record["found"] and record["version"] == "4.0" and record["path"] == str(from_env)


def test_run_command_resolves_and_records_the_program(tmp_path, monkeypatch):
    fake = _fake_program(tmp_path / "bin", "tw_fake_tool", "5.1")
    program = Program(name="tw_fake_tool", family="Fake Suite", install_hint="no way",
                      version_pattern=r"version (\S+)")
    monkeypatch.setenv(program.env_var, str(fake))
    context = ProcessContext(tmp_path, "runs/0001-test", "TS_01")
    completed = context.run_command(["tw_fake_tool", "--flag"], program=program)
    assert completed.args[0] == str(fake)
    (record,) = context.commands
    assert record["command"] == f"{fake} --flag"
    assert record["programs"] == [{"name": "tw_fake_tool", "family": "Fake Suite",
                                   "path": str(fake), "version": "5.1"}]
