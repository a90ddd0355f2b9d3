"""How ``--help`` looks: paragraphs that reflow to the terminal, examples kept whole, panels.

Every hpatool command and group is built with these classes (``hpatool.cli`` passes them to
Typer), and the app runs with ``rich_markup_mode=None``, so help goes through click's plain
layout with this formatter:

- A docstring's paragraphs (separated by blank lines) are joined and wrapped to the terminal
  width (at most 78 columns), never breaking a word at a hyphen (``--min-labels`` stays whole).
  Typer's rich help kept the source line breaks instead, stranding half lines at 80 columns.
- A paragraph that starts with ``Example`` (or click's ``\\b`` marker) is printed line by line as
  written, never wrapped: each example stays one line that can be copied into a shell.
- A group lists its commands under their help panels (``rich_help_panel``), in the order of
  ``list_commands``, each with the whole first paragraph of its help.
- A value's placeholder says what to type, as other command lines' help does: the parameter's
  ``metavar`` (``--dataset NAME``, ``--out FILE.csv``, ``--cache auto|off``), else one made
  from its type (``placeholder``): ``N`` for an integer, ``NUM`` for a number, ``PATH``,
  ``TEXT``, the choices joined by ``|``, a list's element (the option is repeated). Typer's own
  (``<list[str]>``, ``<int range>``) name Python types. An argument is its metavar, else its
  name (``SRC_DIR``), in its row and in the usage line: ``NAME`` (required), ``[NAME]``
  (optional), ``NAME...`` (several).

Plain output also keeps ``hpatool --help`` light: rich's help renderer alone imported markdown
and pygments machinery on every call.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import PurePath
from typing import Any, get_args

import typer
from typer.core import TyperCommand, TyperGroup

#: Paragraphs starting with one of these are printed verbatim, line by line.
VERBATIM_PREFIXES = ("Example", "\b")
#: The panel of a command that names none.
DEFAULT_PANEL = "Commands"


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a help text (dedented, split at blank lines, empty ones dropped)."""
    cleaned = inspect.cleandoc(text).partition("\f")[0]
    blocks: list[list[str]] = [[]]
    for line in cleaned.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return ["\n".join(block) for block in blocks if block]


def is_verbatim(paragraph: str) -> bool:
    return paragraph.startswith(VERBATIM_PREFIXES)


def first_paragraph(text: str | None) -> str:
    """The first paragraph of ``text`` on one line (a command's line in its group's list)."""
    found = paragraphs(text or "")
    return " ".join(found[0].split()) if found else ""


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    wrapper = textwrap.TextWrapper(
        width=max(width, 20),
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return wrapper.wrap(text)


def render_paragraphs(text: str, width: int, indent: str = "") -> str:
    """``text``'s paragraphs, each reflowed to ``width`` (verbatim ones as written), joined by
    blank lines."""
    blocks = []
    for para in paragraphs(text):
        if is_verbatim(para):
            lines = [indent + line.strip() for line in para.lstrip("\b").splitlines()]
            blocks.append("\n".join(line for line in lines if line.strip()))
        else:
            blocks.append("\n".join(_wrap(" ".join(para.split()), width, indent)))
    return "\n\n".join(blocks)


#: click's HelpFormatter, reached through the public ``typer.Context`` (Typer vendors click).
_ClickHelpFormatter: Any = typer.Context.formatter_class


class HelpFormatter(_ClickHelpFormatter):
    """click's ``HelpFormatter`` with hpatool's text layout (see the module docstring)."""

    def write_text(self, text: str) -> None:
        self.write(render_paragraphs(text, self.width, " " * self.current_indent) + "\n")

    def write_dl(
        self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2
    ) -> None:
        rows = list(rows)
        if not rows:
            return
        first_col = min(max(len(first) for first, _ in rows), col_max) + col_spacing
        indent = " " * self.current_indent
        hanging = " " * (first_col + self.current_indent)
        for first, second in rows:
            self.write(indent + first)
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:
                self.write("\n" + hanging)
            lines = _wrap(second.replace("\n", " "), self.width - first_col - self.current_indent)
            self.write(lines[0] + "\n" if lines else "\n")
            self.write("".join(f"{hanging}{line}\n" for line in lines[1:]))


#: The placeholder of a value of each type, for a parameter that names none (its metavar).
TYPE_PLACEHOLDERS: dict[type, str] = {int: "N", float: "NUM", str: "TEXT", bool: "BOOL"}
#: The placeholder of a path by what it may be (Typer's ``file_okay`` / ``dir_okay``).
PATH_PLACEHOLDERS = {"file": "FILE", "dir": "DIR", "path": "PATH"}


def _type_placeholder(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "PATH"
    if annotation is datetime:
        return "DATETIME"
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args:  # list[X], tuple[X, Y]: what to type for each value
        return " ".join(_type_placeholder(a) for a in args)
    return TYPE_PLACEHOLDERS.get(annotation, "VALUE") if isinstance(annotation, type) else "VALUE"


def placeholder(param: Any) -> str:
    """What to type for ``param``'s value: its ``metavar``, else one made from its type
    (see the module docstring)."""
    if param.metavar:
        return str(param.metavar)
    desc = getattr(param, "type_descriptor", None)
    if desc is None:  # not a Typer parameter (click's --help has no value)
        return (param.name or "").upper()
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if desc.is_path:
        args = get_args(desc.annotation)
        if not args or all(isinstance(a, type) and issubclass(a, PurePath) for a in args):
            return PATH_PLACEHOLDERS.get(desc.path_type, "PATH")
    return _type_placeholder(desc.annotation)


def _argument_name(param: Any) -> str:
    """An argument's placeholder (its metavar, else its name: ``SRC_DIR``), with ``...`` when
    it takes several values."""
    name = str(param.metavar or (param.name or "").upper())
    return name if param.nargs == 1 or name.endswith("...") else f"{name}..."


def usage_pieces(param: Any, ctx: Any) -> list[str]:
    """``param``'s part of the usage line: ``NAME``, ``[NAME]`` or ``NAME...`` for an
    argument, nothing for an option (they are ``[OPTIONS]``)."""
    if param.param_type_name != "argument":
        return list(param.get_usage_pieces(ctx))
    name = _argument_name(param)
    return [name if param.required else f"[{name}]"]


def _join_options(opts: Sequence[str]) -> str:
    """``-d, --dataset``: the short spellings first, as click lists them."""
    return ", ".join(sorted(opts, key=lambda opt: len(opt) - len(opt.lstrip("-/+"))))


def help_record(param: Any, ctx: Any) -> tuple[str, str] | None:
    """``param``'s row in ``--help``: its spellings (or, for an argument, its placeholder) with
    the placeholder of its value, and Typer's help text (defaults, range, required)."""
    record = param.get_help_record(ctx)
    if record is None:
        return None
    if param.param_type_name == "argument":
        return _argument_name(param), record[1]
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return record[0], record[1]
    return f"{_join_options(param.opts)} {placeholder(param)}", record[1]


class _HelpMixin:
    """Help through ``HelpFormatter`` and click's plain layout, whatever Typer's markup mode."""

    def get_help(self, ctx: Any) -> str:
        formatter = HelpFormatter(width=ctx.terminal_width, max_width=ctx.max_content_width)
        self.format_help(ctx, formatter)
        return str(formatter.getvalue()).rstrip("\n")

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # click's Command.format_help, step by step (Typer's would hand over to rich).
        command: Any = self
        command.format_usage(ctx, formatter)
        command.format_help_text(ctx, formatter)
        command.format_options(ctx, formatter)
        command.format_epilog(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        command: Any = self
        pieces = [command.options_metavar] if command.options_metavar else []
        for param in command.get_params(ctx):
            pieces.extend(usage_pieces(param, ctx))
        if getattr(command, "subcommand_metavar", None):  # a group: COMMAND [ARGS]...
            pieces.append(command.subcommand_metavar)
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        command: Any = self
        rows: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in command.get_params(ctx):
            record = help_record(param, ctx)
            if record is not None:
                rows["Arguments" if param.param_type_name == "argument" else "Options"].append(
                    record
                )
        for title, section in rows.items():
            if section:
                with formatter.section(title):
                    formatter.write_dl(section)
        if hasattr(command, "format_commands"):
            command.format_commands(ctx, formatter)


class HelpCommand(_HelpMixin, TyperCommand):
    """A command whose ``--help`` reflows (see the module docstring)."""


class HelpGroup(_HelpMixin, TyperGroup):
    """A group whose ``--help`` reflows and lists its commands under their panels."""

    def command_summaries(self, ctx: Any) -> list[tuple[str, str, str]]:
        """``[(command, panel, help text), ...]`` of the commands to list, in order."""
        summaries = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                panel = getattr(cmd, "rich_help_panel", None) or DEFAULT_PANEL
                summaries.append((name, panel, cmd.short_help or cmd.help or ""))
        return summaries

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        panels = command_panels(self, ctx)
        width = max((len(name) for _, rows in panels for name, _ in rows), default=0)
        for panel, rows in panels:
            with formatter.section(panel):  # names padded alike: one column in every panel
                formatter.write_dl([(name.ljust(width), text) for name, text in rows])


def command_panels(group: TyperGroup, ctx: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(panel, [(command, first paragraph of its help), ...]), ...]``: panels in the order
    their first command is listed, commands in ``list_commands`` order, hidden ones left out."""
    if isinstance(group, HelpGroup):
        summaries = group.command_summaries(ctx)
    else:
        summaries = HelpGroup.command_summaries(group, ctx)  # type: ignore[arg-type]
    panels: dict[str, list[tuple[str, str]]] = {}
    for name, panel, text in summaries:
        panels.setdefault(panel, []).append((name, first_paragraph(text)))
    return list(panels.items())


def help_classes(commands: Iterable[Any]) -> None:
    """Give each of a sub-app's registered commands (``typer.models.CommandInfo``) that has
    Typer's default class the ``HelpCommand`` class."""
    for info in commands:
        if info.cls is None or info.cls is TyperCommand:
            info.cls = HelpCommand
