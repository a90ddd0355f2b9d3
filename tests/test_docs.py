"""Every command documents itself with an example, and docs/cli.md matches the app."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpatool.cli._docs import iter_commands, render, root_command
from tests.support import REPO

COMMANDS = [(" ".join(path), cmd) for path, cmd in iter_commands(root_command())]


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n or "hpatool" for n, _ in COMMANDS])
def test_every_command_has_help_and_example(name: str, cmd: object) -> None:
    help_text = getattr(cmd, "help", None) or ""
    assert len(help_text.strip()) > 20, f"'hpatool {name}' has no help text"
    assert "Example: hpatool" in help_text, f"'hpatool {name}' help has no example"


def test_expected_commands_exist() -> None:
    names = {n for n, _ in COMMANDS}
    assert {
        "datasets add",
        "datasets list",
        "datasets show",
        "datasets remove",
        "datasets verify",
        "stats",
        "synth",
        "show",
        "demo",
    } <= names


def test_cli_md_is_current() -> None:
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), (
        "docs/cli.md is stale: run python -m hpatool.cli._docs docs/cli.md"
    )


def test_help_is_fast_and_light() -> None:
    """``hpatool --help`` must not import torch, pandas or matplotlib."""
    code = (
        "import sys; from hpatool.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "heavy = [m for m in ('torch', 'timm', 'pandas', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_m_hpatool() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpatool", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("hpatool ")
