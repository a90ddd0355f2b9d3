"""The ``hpatool`` command line: a thin Typer app over the library.

Errors are translated once, here: an ``HpaToolError`` becomes one line on stderr and its exit
code (1 bad data / failed work, 2 bad usage); anything unexpected becomes one line too, with
the traceback only under ``--debug`` (or ``HPATOOL_DEBUG=1``). Output into a pipe that closes
early (``hpatool datasets list | head -1``) ends quietly with exit status 141.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any, NoReturn

import typer

from hpatool import __version__
from hpatool.cli._common import (
    DATA_PANEL,
    PREDICTION_PANEL,
    ROOT_HOME,
    TOOLS_PANEL,
    TRAINING_PANEL,
    HomeOpt,
)
from hpatool.cli._help import HelpCommand, HelpGroup, help_classes
from hpatool.errors import HpaToolError

# click's exception classes, without a private import. Typer 0.29 vendors click privately
# (``typer._click``) where older Typer used the ``click`` package; either way the public
# ``typer.BadParameter`` *is* click's BadParameter, so the module that defines it is click's
# exceptions module, wherever that lives. This avoids pinning Typer; tests/unit/test_cli_root.py
# fails loudly if the lookup stops working (BadParameter no longer click's, or a name gone).
_click_exceptions = importlib.import_module(typer.BadParameter.__module__)
ClickException: Any = _click_exceptions.ClickException
ClickUsageError: Any = _click_exceptions.UsageError
NoArgsIsHelpError: Any = _click_exceptions.NoArgsIsHelpError

#: The exit status after the reader of stdout went away: what a shell reports for a process
#: that SIGPIPE ended (128 + 13).
BROKEN_PIPE_EXIT = 141


class _Group(HelpGroup):
    """Root group: its commands are ``COMMANDS``, listed in that order and built when used; it
    turns exceptions from any subcommand into one clean line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lazy = _LazyCommands()
        lazy.update(self.commands)
        self.commands = lazy

    def list_commands(self, ctx: Any) -> list[str]:
        # The workflow order of COMMANDS (Typer would list sub-apps after plain commands).
        return list(self.commands)

    def command_summaries(self, ctx: Any) -> list[tuple[str, str, str]]:
        return [(name, *_summary(name)) for name in self.list_commands(ctx)]

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        if parent is None:
            args = _debug_first(list(args))
        with _quiet_broken_pipe():
            try:
                return super().make_context(info_name, args, parent=parent, **extra)
            except NoArgsIsHelpError as exc:  # plain `hpatool`: the help, and exit 2
                _no_args_help(exc)
            except ClickUsageError as exc:  # a bad root option, such as `hpatool --bogus`
                _usage_line(exc)
                raise typer.Exit(2) from None

    def invoke(self, ctx: Any) -> Any:  # a click Context (Typer vendors click)
        _escape_unprintable()
        with _quiet_broken_pipe(), _own_warnings():
            return self._invoke(ctx)

    def _invoke(self, ctx: Any) -> Any:
        from hpatool.cli._console import print_error

        try:
            return super().invoke(ctx)
        except HpaToolError as exc:
            if _debug(ctx):
                raise
            from hpatool.cli._failures import worker_text

            print_error(worker_text(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            print_error("interrupted")
            raise typer.Exit(130) from None
        except NoArgsIsHelpError as exc:  # a group without a command, such as `hpatool runs`
            _no_args_help(exc)
        except ClickUsageError as exc:
            # Typer's own parse errors (missing argument, value out of range, unknown command):
            # one line too, instead of click's usage text and a boxed message.
            if _debug(ctx):
                raise
            _usage_line(exc)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, typer.TyperException, ClickException, BrokenPipeError):
            raise
        except UnicodeError as exc:
            # a name or value with bytes that are not UTF-8 (a folder, an id, a label CSV)
            # reaching a file, the registry or the terminal: the thing, shown escaped
            if _debug(ctx):
                raise
            from hpatool.cli._failures import not_utf8_line

            print_error(not_utf8_line(exc))
            raise typer.Exit(2) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            from hpatool.cli._failures import link_loop_line, os_error_line, worker_text

            # an OSError naming its file (exit 1: the work failed), a loop of symbolic links
            # (exit 2: a path to fix); else the exception's own words
            if isinstance(exc, OSError) and (line := os_error_line(exc)):
                print_error(line)
                raise typer.Exit(1) from None
            if isinstance(exc, RuntimeError) and (line := link_loop_line(exc)):
                print_error(line)
                raise typer.Exit(2) from None
            text = worker_text(exc) or type(exc).__name__
            print_error(f"unexpected {type(exc).__name__}: {text} (rerun with --debug for details)")
            raise typer.Exit(1) from None


def _escape_unprintable() -> None:
    """Text that stdout or stderr cannot encode (a file name with bytes that are not UTF-8,
    held by Python as surrogates) is written escaped (``\\udcff``) instead of failing after the
    work is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if stream.errors == "strict":
                stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """End quietly, exit 141, when whoever reads stdout has gone (``hpatool ... | head -1``)."""
    try:
        yield
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(BROKEN_PIPE_EXIT) from None


@contextlib.contextmanager
def _own_warnings() -> Iterator[None]:
    """hpatool's own warnings (``warnings.warn`` with a category defined in hpatool, such as
    ``WorkersCapped``) as one ``warning: ...`` line on stderr (``note: ...`` for a ``Note``),
    once per command; others as Python shows them."""
    import warnings

    with warnings.catch_warnings():
        shown = warnings.showwarning
        printed: set[str] = set()  # a line said once is not repeated (cv's folds, OOF scoring)

        def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if category.__module__.startswith("hpatool."):
                from hpatool.cli._console import err, one_line
                from hpatool.errors import Note

                kind = "note" if issubclass(category, Note) else "warning"
                line = f"{kind}: {one_line(str(message))}"
                if line not in printed:
                    printed.add(line)
                    console = err()  # on a terminal wrapped between words, else one line
                    console.print(line, markup=False, soft_wrap=not console.is_terminal)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show  # catch_warnings resets the "shown once" registries
        yield


def _silence_stdout() -> None:
    """The Python docs' recipe for a closed pipe (see the note on SIGPIPE in the ``signal``
    docs): point stdout at devnull, so that flushing it at exit cannot fail once more."""
    with contextlib.suppress(OSError, ValueError):  # a test runner's stdout has no descriptor
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _no_args_help(exc: Any) -> NoReturn:
    """A command called without arguments that needs some: its help on stdout, exit 2."""
    typer.echo(exc.format_message())
    raise typer.Exit(2) from None


def _usage_line(exc: Any) -> None:
    from hpatool.cli._console import print_error

    where = exc.ctx.command_path if exc.ctx is not None else "hpatool"
    message = " ".join(exc.format_message().split())
    print_error(f"{message} (see '{where} -h')")


def _debug_first(args: list[str]) -> list[str]:
    """``--debug`` anywhere before a ``--`` moves to the front, where the root group reads it:
    ``hpatool datasets list --debug`` works as ``hpatool --debug datasets list`` (like
    ``--home``, which every command takes too)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    rest = [a for a in args[:end] if a != "--debug"]
    return ["--debug", *rest, *args[end:]]


def _debug(ctx: Any) -> bool:
    env = os.environ.get("HPATOOL_DEBUG", "")
    return bool(ctx.meta.get("hpatool.debug")) or env not in ("", "0")


app = typer.Typer(
    cls=_Group,
    name="hpatool",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, laid out by hpatool.cli._help
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hpatool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: HomeOpt = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks on errors (before or after the command)."),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Human Protein Atlas image classification, from label CSVs to a Kaggle submission.

    One tool from label CSVs and the public HPA image server to a trained 4-channel CNN and a
    submission; every command shares one dataset registry (see --home).

    Example: hpatool demo
    """
    ROOT_HOME.set(home)
    ctx.meta["hpatool.debug"] = debug


#: Every command, in workflow order, as the root ``--help`` lists it: (command name, module
#: under ``hpatool.cli``, the function or sub-app in it, help panel). Command modules import only
#: typer and light parts of hpatool at module level; torch, pandas and matplotlib are imported
#: inside the commands.
COMMANDS = (
    ("datasets", "datasets", "app", DATA_PANEL),
    ("download-external", "download", "download_external", DATA_PANEL),
    ("preprocess", "preprocess", "preprocess", DATA_PANEL),
    ("stats", "stats", "stats", DATA_PANEL),
    ("show", "show", "show", DATA_PANEL),
    ("dedup", "dedup", "dedup", DATA_PANEL),
    ("split", "split", "split", TRAINING_PANEL),
    ("train", "train", "train", TRAINING_PANEL),
    ("cv", "cv", "cv", TRAINING_PANEL),
    ("runs", "runs", "app", TRAINING_PANEL),
    ("experiments", "experiments", "app", TRAINING_PANEL),
    ("evaluate", "evaluate", "evaluate", PREDICTION_PANEL),
    ("predict", "predict", "predict", PREDICTION_PANEL),
    ("blend", "blend", "blend", PREDICTION_PANEL),
    ("synth", "synth", "synth", TOOLS_PANEL),
    ("demo", "demo", "demo", TOOLS_PANEL),
)


def _target(name: str) -> tuple[Any, str]:
    """The function or sub-app of command ``name`` (importing its module), and its panel."""
    for command, module_name, attr, panel in COMMANDS:
        if command == name:
            return getattr(importlib.import_module(f"hpatool.cli.{module_name}"), attr), panel
    raise KeyError(name)


def _build(name: str) -> Any:
    """The click command of ``name``, made by Typer as if it were registered on ``app``."""
    target, panel = _target(name)
    holder = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
    if isinstance(target, typer.Typer):
        help_classes(target.registered_commands)
        holder.add_typer(target, name=name, rich_help_panel=panel, cls=HelpGroup)
    else:
        holder.command(name, rich_help_panel=panel, cls=HelpCommand)(target)
    return typer.main.get_group(holder).commands[name]


def _summary(name: str) -> tuple[str, str]:
    """``(panel, help text)`` of command ``name``, without building it.

    Read from the command module's source (the function's docstring, or a sub-app's
    ``typer.Typer(help=...)``) without importing it: importing the twelve command modules took
    about 100 ms of the root ``--help``'s 270 ms. A module already imported, or a help text
    that is not a literal, is read from the live object instead."""
    for command, module_name, attr, panel in COMMANDS:
        if command == name and f"hpatool.cli.{module_name}" not in sys.modules:
            text = _summary_from_source(module_name, attr)
            if text is not None:
                return panel, text
    target, panel = _target(name)
    if not isinstance(target, typer.Typer):
        return panel, inspect.getdoc(target) or ""
    if isinstance(target.info.help, str):
        return panel, target.info.help
    callback = target.registered_callback.callback if target.registered_callback else None
    return panel, (inspect.getdoc(callback) if callback else None) or ""


def _summary_from_source(module_name: str, attr: str) -> str | None:
    """The help text of ``attr`` in ``hpatool/cli/<module_name>.py``, read with ``ast``; None
    where it cannot be read that way."""
    import ast
    from pathlib import Path

    source = Path(__file__).with_name(f"{module_name}.py")
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return ast.get_docstring(node) or ""
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == attr for t in node.targets)
            and isinstance(node.value, ast.Call)
        ):
            for keyword in node.value.keywords:
                if keyword.arg == "help" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return None


class _LazyCommands(MutableMapping[str, Any]):
    """The root's commands, in ``COMMANDS`` order, each built by Typer when first looked up.

    Typer turns every parameter of every command into a click option before it runs anything;
    built lazily, ``hpatool train ...`` builds (and imports) only ``train``, and the root
    ``--help`` reads first paragraphs without building any."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}
        self._extra: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        if name not in self._built:
            self._built[name] = _build(name)  # KeyError for an unknown name
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._extra[name] = command

    def __delitem__(self, name: str) -> None:
        del self._extra[name]

    def __iter__(self) -> Iterator[str]:
        names = [name for name, *_ in COMMANDS]
        return iter([*names, *(n for n in self._extra if n not in names)])

    def __len__(self) -> int:
        return len(list(iter(self)))


def main() -> None:
    try:
        try:
            app(prog_name="hpatool")
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(BROKEN_PIPE_EXIT)
