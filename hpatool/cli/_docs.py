"""Generate ``docs/cli.md`` from the Typer app: every command's usage, help and options.

Run ``python -m hpatool.cli._docs docs/cli.md`` (or ``nox -s docs``); a test checks that the
committed file matches what this generates.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

from hpatool.cli._help import command_panels, help_record, placeholder

HEADER = """# hpatool command reference

Generated from the app by `python -m hpatool.cli._docs docs/cli.md`; do not edit by hand.
Global options go before the command (`hpatool --home DIR datasets list`); every command that
uses the registry also takes `--home`.
"""


def iter_commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command (groups included) with its path from the root, in help order."""
    yield path, cmd
    if isinstance(cmd, TyperGroup):
        ctx = typer.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from iter_commands(sub, (*path, name))


def root_command() -> Any:
    from hpatool.cli import app

    return typer.main.get_command(app)


def _param_line(param: Any, ctx: typer.Context) -> str:
    record = help_record(param, ctx)  # as --help shows it: NAME..., --out FILE.csv
    if isinstance(param, TyperArgument):
        name, text = record if record else (placeholder(param), getattr(param, "help", ""))
        return f"- `{name}` (argument{', required' if param.required else ''}): {text}".rstrip(": ")
    flags, text = record if record else (param.name, "")
    return f"- `{flags}`: {' '.join(text.split())}"


def render() -> str:
    root = root_command()
    parts = [HEADER]
    for path, cmd in iter_commands(root):
        title = " ".join(("hpatool", *path))
        ctx = typer.Context(cmd, info_name=title)
        parts.append(f"\n## `{title}`\n")
        parts.append(f"```\n{cmd.get_usage(ctx).strip()}\n```\n")
        help_text = (cmd.help or "").replace("\b", "").strip()
        if help_text:
            parts.append("\n" + "\n".join(line.strip() for line in help_text.splitlines()) + "\n")
        params = [
            p for p in cmd.params if not getattr(p, "hidden", False) and p.name not in ("help",)
        ]
        if params:
            parts.append("\n" + "\n".join(_param_line(p, ctx) for p in params) + "\n")
        if isinstance(cmd, TyperGroup):
            for panel, rows in command_panels(cmd, ctx):
                parts.append(f"\n{panel}: " + ", ".join(f"`{n}`" for n, _ in rows) + "\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
