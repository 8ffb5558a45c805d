"""A third-party plugin package, built and pip-installed by the test: its own item type and
protocols (one calling an external program) run on the inline, local and dask executors; the
protocol needing a missing program is not offered, `tomoweave plugins` says how to get it, and a
workflow naming it fails before any run starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tomoweave.api import Project
from tomoweave.engine import registry

PLUGIN_MODULE = textwrap.dedent('''
    """tomoweave plugin made by a test: counts tilts, with its own item type."""
    import os

    from pydantic import BaseModel

    from tomoweave.engine import Input, ItemError, Output, Protocol, param
    from tomoweave.engine.programs import Program
    from tomoweave.model import Item, TiltSeries

    SPOTS_TOOL = Program(name="tw_spots_tool", family="Spots", install_hint="pip install spots-tool",
                         version_pattern=r"spots tool (\\S+)", needs=("threads",))


    class TiltCount(Item):
        name: str
        tilt_count: int
        tilt_span_deg: float
        worker_pid: int


    class CountTilts(Protocol):
        """Count the tilts of each series."""
        name = "spots.count_tilts"
        inputs = {"tilt_series": Input(TiltSeries)}
        outputs = {"counts": Output(TiltCount)}

        def process(self, item, params, context):
            angles = [t.tilt_deg for t in item.tilts]
            return {"counts": TiltCount(name=item.name, tilt_count=len(angles),
                                        tilt_span_deg=max(angles) - min(angles),
                                        worker_pid=os.getpid())}


    class ScaleParams(BaseModel):
        factor: int = param(2, ge=1, help="multiply the counts by this")


    class ScaleCounts(Protocol):
        """Multiply counts (a protocol mapped over the plugin's own item type)."""
        name = "spots.scale"
        Params = ScaleParams
        inputs = {"counts": Input(TiltCount)}
        outputs = {"counts": Output(TiltCount)}

        def process(self, item, params, context):
            return {"counts": item.model_copy(update={"tilt_count": item.tilt_count * params.factor,
                                                      "worker_pid": os.getpid()})}


    class ExternalCount(Protocol):
        """Count tilts with the external spots tool."""
        name = "spots.external"
        programs = (SPOTS_TOOL,)
        inputs = {"tilt_series": Input(TiltSeries)}
        outputs = {"counts": Output(TiltCount)}

        def process(self, item, params, context):
            done = context.run_command(["tw_spots_tool", str(len(item.tilts))], program=SPOTS_TOOL)
            count = int(done.stdout.split()[-1])
            if count != len(item.tilts):
                raise ItemError(f"{item.name}: the tool counted {count}")
            return {"counts": TiltCount(name=item.name, tilt_count=count, tilt_span_deg=0.0,
                                        worker_pid=os.getpid())}
''')

PYPROJECT = textwrap.dedent("""
    [build-system]
    requires = ["setuptools>=61"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "tw-spots-plugin"
    version = "0.1"

    [project.entry-points."tomoweave.protocols"]
    spots = "tw_spots_plugin"

    [project.entry-points."tomoweave.item_types"]
    spots = "tw_spots_plugin"

    [tool.setuptools]
    packages = ["tw_spots_plugin"]
""")

TOOL = "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'spots tool 0.9.2'; exit 0; fi\n" \
       "echo 'counting'\necho \"tilts $1\"\n"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The plugin package pip-installed into a folder of its own, on sys.path and PYTHONPATH
    (worker processes of every executor inherit both), removed again afterwards."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    (source / "tw_spots_plugin").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "tw_spots_plugin" / "__init__.py").write_text(PLUGIN_MODULE)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)], check=True)
    assert list(site.glob("tw_spots_plugin-0.1.dist-info/entry_points.txt"))
    old_pythonpath = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), old_pythonpath]))
    registry.refresh()
    yield site
    sys.path.remove(str(site))
    if old_pythonpath is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old_pythonpath
    for name in [m for m in sys.modules if m.startswith("tw_spots_plugin")]:
        del sys.modules[name]
    registry.refresh()


@pytest.fixture(scope="module")
def project(plugin_site, tmp_path_factory):
    project = Project.init(tmp_path_factory.mktemp("plugin_project") / "project")
    project.run("simulate", params={"preset": "tiny", "n_series": 2}, name="sim",
                executor="inline")
    counted = project.run("spots.count_tilts", inputs={"tilt_series": "sim"}, name="count",
                          executor="inline")
    assert counted.state == "finished"
    return project


@pytest.fixture
def spots_tool(tmp_path, monkeypatch):
    tool = tmp_path / "spots-bin" / "tw_spots_tool"
    tool.parent.mkdir()
    tool.write_text(TOOL)
    tool.chmod(0o755)
    monkeypatch.setenv("TOMOWEAVE_SPOTS", str(tool.parent))
    return tool


def _cli(*args: str):
    from typer.testing import CliRunner

    from tomoweave.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("executor", ["inline", "local",
                                      pytest.param("dask", marks=pytest.mark.slow)])
def test_plugin_item_type_and_protocols_run_on_every_executor(project, executor, spots_tool):
    from tw_spots_plugin import TiltCount

    counted = project.get_run("count")  # made inline; scale maps over its TiltCount items
    scaled = project.run("spots.scale", inputs={"counts": "count"}, params={"factor": 3},
                         name=f"scale-{executor}", executor=executor, workers=1)
    external = project.run("spots.external", inputs={"tilt_series": "sim"},
                           name=f"external-{executor}", executor=executor, workers=1)
    series = {s.name: s for s in project.items("sim", "tilt_series")}
    for run in (counted, scaled, external):
        assert run.state == "finished", (run.name, run.record.error)
        items = project.items(run)
        assert sorted(i.name for i in items) == sorted(series)
        assert all(isinstance(i, TiltCount) for i in items)
    for run in (scaled, external):
        same_process = {i.worker_pid == os.getpid() for i in project.items(run)}
        assert same_process == {executor == "inline"}, "the executor did not run the tasks"
    for item in project.items(scaled):
        assert item.tilt_count == 3 * len(series[item.name].tilts)
    commands = external.record.provenance["commands"]
    assert sorted(c["task"] for c in commands) == sorted(series)
    assert all(c["command"] == f"{spots_tool} {len(series[c['task']].tilts)}" for c in commands)
    assert all(c["programs"][0]["version"] == "0.9.2" and c["exit_code"] == 0 for c in commands)
    assert external.record.provenance["programs"] == [
        {"name": "tw_spots_tool", "family": "Spots", "path": str(spots_tool), "version": "0.9.2"}]
    log = (project.root / external.folder / "logs" / "run.log").read_text()
    assert f"$ {spots_tool} " in log and "[tw_spots_tool] counting" in log


def test_missing_program_is_listed_not_offered_and_stops_a_workflow(project, tmp_path,
                                                                    monkeypatch):
    monkeypatch.delenv("TOMOWEAVE_SPOTS", raising=False)
    plugins = _cli("plugins", "--json")
    assert plugins.exit_code == 0, plugins.output
    (tool,) = [p for p in json.loads(plugins.stdout) if p["name"] == "tw_spots_tool"]
    assert tool == {**tool, "found": False, "path": None, "version": None,
                    "install_hint": "pip install spots-tool", "protocols": ["spots.external"],
                    "family": "Spots", "env_var": "TOMOWEAVE_SPOTS", "needs": ["threads"]}
    offered = json.loads(_cli("protocols", "--json").stdout)
    assert "spots.count_tilts" in offered and "spots.external" not in offered

    workflow = tmp_path / "workflow.yaml"
    workflow.write_text("runs:\n  - {name: count, protocol: spots.count_tilts, inputs: "
                        "{tilt_series: sim}}\n  - {name: ext, protocol: spots.external, inputs: "
                        "{tilt_series: sim}}\n")
    runs_before = [r.name for r in project.runs()]
    failed = _cli("run-workflow", str(workflow), "-p", str(project.root))
    assert failed.exit_code == 1
    assert failed.stderr.strip().splitlines() == [
        f"error: {workflow}: run 'ext': spots.external cannot run here: tw_spots_tool (Spots) "
        f"not found: pip install spots-tool; or set TOMOWEAVE_SPOTS to its folder, or name it "
        f"in programs.toml"]
    assert [r.name for r in Project.open(project.root).runs()] == runs_before

    # the project's programs.toml makes it available, for this project only
    tool_path = tmp_path / "tools" / "tw_spots_tool"
    tool_path.parent.mkdir()
    tool_path.write_text(TOOL)
    tool_path.chmod(0o755)
    (project.root / "programs.toml").write_text(f'Spots = "{tool_path.parent}"\n')
    try:
        listed = json.loads(_cli("plugins", "--json", "-p", str(project.root)).stdout)
        (tool,) = [p for p in listed if p["name"] == "tw_spots_tool"]
        assert tool["found"] and tool["path"] == str(tool_path) and tool["version"] == "0.9.2"
        run = project.run("spots.external", inputs={"tilt_series": "sim"}, name="external-toml",
                          executor="inline")
        assert run.state == "finished"
    finally:
        (project.root / "programs.toml").unlink()
