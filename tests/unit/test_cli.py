"""The ``caliber`` command's shape: every sub-app listed, plugins loaded only when used."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from tooling.cli import PLUGINS, app


def test_help_lists_the_built_in_sub_apps_and_the_plugins() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ["stack", "topics", "db", "services", *PLUGINS]:
        assert f" {name} " in result.output, name


def test_stack_commands_do_not_import_the_plugins() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from tooling.cli import app; "
        "r = CliRunner().invoke(app, ['stack', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('simulator.cli', 'simulator.demo', 'services.gateway.cli') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_one_command_plugin_keeps_its_sub_command() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0, result.output
    assert " run " in result.output


def test_python_dash_m_runs_the_same_app() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tooling.cli", "db", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout
