"""Every command documents itself with an example, and docs/cli.md matches the app."""

from __future__ import annotations

import inspect
import itertools
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hpatool.cli import app
from hpatool.cli._docs import iter_commands, render, root_command
from tests.support import REPO

COMMANDS = [(" ".join(path), cmd) for path, cmd in iter_commands(root_command())]


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n or "hpatool" for n, _ in COMMANDS])
def test_every_command_has_help_and_example(name: str, cmd: object) -> None:
    help_text = getattr(cmd, "help", None) or ""
    assert len(help_text.strip()) > 20, f"'hpatool {name}' has no help text"
    assert "Example: hpatool" in help_text, f"'hpatool {name}' help has no example"


def _source_paragraphs(help_text: str) -> list[str]:
    """The help's paragraphs as the docstring has them (blank-line separated, dedented)."""
    return [p.strip() for p in inspect.cleandoc(help_text).split("\n\n") if p.strip()]


def _description(output: str) -> list[list[str]]:
    """The paragraphs (lists of lines, dedented) between the usage and the first section."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if not line.strip())  # after "Usage: ..."
    blocks: list[list[str]] = [[]]
    for line in lines[start + 1 :]:
        if re.fullmatch(r"\S.*:", line):  # "Options:", "Arguments:", a panel
            break
        if line.strip():
            blocks[-1].append(line.strip())
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


@pytest.mark.parametrize("columns", [60, 80, 200])
@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n or "hpatool" for n, _ in COMMANDS])
def test_help_reflows_at_any_width(name: str, cmd: Any, columns: int) -> None:
    """Each paragraph of the docstring is one reflowed paragraph of --help: no line ends early
    (a stranded half line), no word is split, and every example line stays whole."""
    width = max(min(columns, 80) - 2, 50)  # click's: the terminal, at most 78, at least 50
    # (the test runner fixes the width at 80; a terminal's COLUMNS gives this width)
    result = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    shown = _description(result.stdout)
    source = _source_paragraphs(cmd.help)
    assert len(shown) == len(source), (shown, source)
    for lines, paragraph in zip(shown, source, strict=True):
        if paragraph.startswith("Example"):
            assert lines == [line.strip() for line in paragraph.splitlines()], lines
            continue
        assert " ".join(lines) == " ".join(paragraph.split()), "words lost or split"
        for line, after in itertools.pairwise(lines):
            indented = len(line) + 2  # the help text is indented by 2
            assert indented + 1 + len(after.split()[0]) > width, f"line ends early: {line!r}"
            assert indented <= width or " " not in line, f"line too long: {line!r}"


def test_every_group_lists_whole_first_paragraphs() -> None:
    """A group's command list shows each command's whole first paragraph (not cut at 45
    characters), wrapped under the command name."""
    for name, cmd in COMMANDS:
        if not hasattr(cmd, "list_commands"):
            continue
        result = CliRunner().invoke(app, [*name.split(), "--help"])
        flat = " ".join(result.stdout.split())
        ctx = typer.Context(cmd)
        for sub in cmd.list_commands(ctx):
            first = _source_paragraphs(cmd.get_command(ctx, sub).help)[0]
            assert f"{sub} {' '.join(first.split())}" in flat, (name, sub)


def test_help_follows_the_terminal_width() -> None:
    """End to end: COLUMNS=60 wraps the help at 58 columns, examples aside."""
    env = {**os.environ, "COLUMNS": "60", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "hpatool", "datasets", "add", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    lines = [line for line in out.splitlines() if not line.strip().startswith("Example")]
    assert max(len(line) for line in lines) <= 58, out
    assert "  Example: hpatool datasets add kaggle-train --labels train.csv --root train/" in out


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
    """``hpatool --help`` must not import torch, pandas or matplotlib, nor rich (plain help)."""
    code = (
        "import sys; from hpatool.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "heavy = [m for m in ('torch', 'timm', 'pandas', 'matplotlib', 'rich') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_root_help_imports_no_command_module() -> None:
    """The root ``--help`` reads the commands' summaries from their source: it imports none of
    the command modules (importing them was 100 ms of its start-up)."""
    code = (
        "import sys; from hpatool.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('hpatool.cli.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hpatool.cli._common,hpatool.cli._help"


def test_python_m_hpatool() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpatool", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("hpatool ")


def test_architecture_md_maps_every_module() -> None:
    """docs/architecture.md names every module of the package, and no module that is gone."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = REPO / "hpatool"
    modules = {
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name not in ("__main__.py",)
        and not (p.name == "__init__.py" and p.parent == package)
        and not (p.name == "__init__.py" and p.parent.name in ("convert", "data", "engine"))
    }
    missing = sorted(m for m in modules if f"`{m}`" not in text)
    assert not missing, f"docs/architecture.md does not map {missing}"
    named = set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", text))
    tests = {t.name for t in (REPO / "tests").rglob("*.py")}
    gone = sorted(
        n for n in named if not ((package / n).exists() or (REPO / n).exists() or n in tests)
    )
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
