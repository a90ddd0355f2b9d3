"""The root command group: click's exception classes found without a private import, commands
listed in workflow order, no-argument help, and output into a pipe that closes early."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import hpatool.cli as cli_module
from hpatool.cli import COMMANDS, app
from hpatool.cli._common import DATA_PANEL, PREDICTION_PANEL, TOOLS_PANEL, TRAINING_PANEL
from tests.support import REPO, Invoke, one_line_error


def test_click_exceptions_are_found_through_public_typer() -> None:
    """hpatool.cli finds click's exception classes through ``typer.BadParameter`` (Typer
    vendors click privately). If this fails, Typer changed how it exposes click: find the
    classes another way or pin Typer, but don't import ``typer._click``."""
    mro = typer.BadParameter.__mro__
    assert cli_module.ClickUsageError in mro, "typer.BadParameter is no longer click's"
    assert cli_module.ClickException in mro, "typer.BadParameter is no longer click's"
    assert issubclass(cli_module.NoArgsIsHelpError, cli_module.ClickUsageError)
    assert cli_module.NoArgsIsHelpError.__module__ == typer.BadParameter.__module__


def test_no_private_typer_import() -> None:
    for path in (REPO / "hpatool").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            private = [n for n in names if n.startswith("typer.") and "._" in n]
            assert not private, f"{path}:{node.lineno} imports {private}"


def test_the_lookup_works_end_to_end(cli: Invoke) -> None:
    """The classes found are the ones Typer raises: usage errors become one line, a group
    without a command prints its help (stdout, exit 2, as before)."""
    one_line_error(cli("--bogus"))
    one_line_error(cli("datasets", "add"))
    for args in ((), ("datasets",), ("runs",)):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout.startswith("Usage: hpatool"), args
        assert result.stderr == "", args


def _root_listing(text: str) -> list[tuple[str, str]]:
    """``[(panel, command), ...]`` in the order the root ``--help`` lists them."""
    listing: list[tuple[str, str]] = []
    panel = None
    for line in text.splitlines():
        heading = re.fullmatch(r"(\S.*):", line)
        if heading:
            panel = heading.group(1)
        elif panel not in (None, "Options") and re.match(r"  \S", line):
            listing.append((panel or "", line.split()[0]))
    return listing


def test_root_help_lists_commands_in_workflow_order() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listing = _root_listing(result.stdout)
    assert listing == [(panel, name) for name, _module, _attr, panel in COMMANDS]
    assert listing[0] == (DATA_PANEL, "datasets")
    panels = list(dict.fromkeys(panel for panel, _ in listing))
    assert panels == [DATA_PANEL, TRAINING_PANEL, PREDICTION_PANEL, TOOLS_PANEL]


def test_commands_table_is_what_the_app_has() -> None:
    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    assert root.list_commands(ctx) == [name for name, *_ in COMMANDS]  # type: ignore[attr-defined]


# --------------------------------------------------------------------- closed pipes


def _closed_pipe_run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """``hpatool ARGS`` writing into a pipe whose reader is already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "HPATOOL_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("HPATOOL_DEBUG", None)
    try:
        return subprocess.run(
            [sys.executable, "-m", "hpatool", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["datasets", "--help"],
        ["runs", "list", "--help"],
        ["train", "--help"],
        ["datasets", "list"],
        ["datasets", "list", "--json"],
        [],
    ],
    ids=" ".join,
)
def test_closed_pipe_ends_quietly(args: list[str], tmp_path: Path) -> None:
    result = _closed_pipe_run(args, tmp_path / "home")
    assert result.stderr == ""
    assert result.returncode == cli_module.BROKEN_PIPE_EXIT


def test_head_reads_the_first_line(tmp_path: Path) -> None:
    """``hpatool --help | head -1``: the first line, and nothing on stderr."""
    env = {**os.environ, "HPATOOL_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpatool", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like head -1: read one line, then go away
    err = proc.stderr.read()
    proc.stderr.close()
    code = proc.wait(timeout=60)
    assert first.startswith(b"Usage: hpatool")
    assert err == b""
    assert code in (0, cli_module.BROKEN_PIPE_EXIT)
