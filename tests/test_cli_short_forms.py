"""`tomoweave import/export FORMAT` take what `tomoweave run import.FORMAT` takes (issue 11, "the
short forms do not take what the long forms take"), and their --help shows the format's options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_stack
from typer.testing import CliRunner

from tomoweave.cli import app

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imod"


def tomoweave(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def project_with_stack(tmp_path) -> Path:
    project = tmp_path / "project"
    assert tomoweave("init", project)[0] == 0
    stack = write_stack(tmp_path / "data" / "TS_01.mrc", 59, size_yx=(16, 16), pixel_size_a=2.0)
    shutil.copy(DATA / "tilt_1.tlt", stack.with_suffix(".tlt"))
    code, output = tomoweave("import", "tiltseries", stack, "-p", project, "--name", "stacks")
    assert code == 0, output
    for suffix in (".xf", ".tlt", ".xtilt"):
        shutil.copy(DATA / f"tilt_1{suffix}", tmp_path / "data" / f"TS_01{suffix}")
    return project


def _attached(project: Path, run: str) -> bool:
    code, output = tomoweave("show", f"{run}.tilt_series", "-p", project, "--json")
    assert code == 0, output
    (series,) = json.loads(output)["items"]
    return all(t["image_path"] and t.get("y_tilt_deg") is not None for t in series["tilts"])


def test_import_short_form_takes_input(project_with_stack):
    xf = project_with_stack.parent / "data" / "TS_01.xf"
    code, output = tomoweave("import", "imod", xf, "-i", "tilt_series=stacks", "-p",
                             project_with_stack, "--name", "short")
    assert code == 0, output
    assert _attached(project_with_stack, "short")
    code, output = tomoweave("import", "imod", xf, "--input", "tilt_series=stacks", "-p",
                             project_with_stack, "--name", "long_flag")
    assert code == 0 and _attached(project_with_stack, "long_flag"), output


def test_unknown_short_option_is_an_error_not_a_file(project_with_stack):
    xf = project_with_stack.parent / "data" / "TS_01.xf"
    code, output = tomoweave("import", "imod", xf, "-x", "3", "-p", project_with_stack)
    assert code != 0 and "unknown option -x" in output


def test_run_set_single_value_for_a_list_parameter(project_with_stack):
    xf = project_with_stack.parent / "data" / "TS_01.xf"
    code, output = tomoweave("run", "import.imod", "--set", f"files={xf}", "--input",
                             "tilt_series=stacks", "-p", project_with_stack, "--name", "long")
    assert code == 0, output
    assert _attached(project_with_stack, "long")


def test_help_of_a_format_lists_its_options():
    code, output = tomoweave("import", "tiltseries", "--help")
    assert code == 0
    for flag in ("--tilts", "--pixel-size", "--tilt-axis", "--voltage", "--cs",
                 "--dose-per-tilt", "--acquisition-scheme"):
        assert flag in output, flag
    code, output = tomoweave("import", "imod", "--help")
    assert code == 0 and "--series" in output and "--input, -i" in output
    code, output = tomoweave("export", "--help")
    assert code == 0 and "relion5" in output and "--out " not in output
    code, output = tomoweave("export", "relion5", "--help")
    assert code == 0 and "--out-dir" in output and "--defocus" in output


def test_export_out_dir_and_its_short_alias(project_with_stack, tmp_path):
    for flag, folder in (("--out-dir", "a"), ("--out", "b")):
        code, output = tomoweave("export", "relion5", "-i", "tilt_series=stacks", flag,
                                 tmp_path / folder, "--defocus", 30000, "-p",
                                 project_with_stack)
        assert code == 0, output
        assert (tmp_path / folder / "tilt_series" / "TS_01.star").is_file()
