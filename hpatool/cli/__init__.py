"""The ``hpatool`` command line: a thin Typer app over the library.

Errors are translated once, here: an ``HpaToolError`` becomes one line on stderr and its exit
code (1 bad data / failed work, 2 bad usage); anything unexpected becomes one line too, with
the traceback only under ``--debug`` (or ``HPATOOL_DEBUG=1``).
"""

from __future__ import annotations

import importlib
import os
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exc  # Typer's vendored click
from typer.core import TyperGroup

from hpatool import __version__
from hpatool.cli._common import (
    DATA_PANEL,
    PREDICTION_PANEL,
    ROOT_HOME,
    TOOLS_PANEL,
    TRAINING_PANEL,
    HomeOpt,
)
from hpatool.errors import HpaToolError


class _Group(TyperGroup):
    """Root group: turns exceptions from any subcommand into one clean line and an exit code."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_exc.NoArgsIsHelpError:
            raise  # plain `hpatool` or a group without a command: its help, as click prints it
        except click_exc.UsageError as exc:  # a bad root option, such as `hpatool --bogus`
            _usage_line(exc)
            raise typer.Exit(2) from None

    def invoke(self, ctx: Any) -> Any:  # a click Context (Typer vendors click)
        from hpatool.cli._console import print_error

        try:
            return super().invoke(ctx)
        except HpaToolError as exc:
            if _debug(ctx):
                raise
            print_error(_from_worker(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            print_error("interrupted")
            raise typer.Exit(130) from None
        except click_exc.NoArgsIsHelpError:
            raise
        except click_exc.UsageError as exc:
            # Typer's own parse errors (missing argument, value out of range, unknown command):
            # one line too, instead of click's usage text and a boxed message.
            if _debug(ctx):
                raise
            _usage_line(exc)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, typer.TyperException, click_exc.ClickException):
            raise
        except Exception as exc:
            if _debug(ctx):
                raise
            text = _from_worker(exc) or type(exc).__name__
            print_error(f"unexpected {type(exc).__name__}: {text} (rerun with --debug for details)")
            raise typer.Exit(1) from None


def _usage_line(exc: click_exc.UsageError) -> None:
    from hpatool.cli._console import print_error

    where = exc.ctx.command_path if exc.ctx is not None else "hpatool"
    message = " ".join(exc.format_message().split())
    print_error(f"{message} (see '{where} -h')")


def _from_worker(exc: BaseException) -> str:
    """The text of ``exc`` on one line; for an error that torch re-raised from a DataLoader
    worker ("Caught X in DataLoader worker process N. Original Traceback ... X: <text>"), just
    the original ``<text>``."""
    text = str(exc)
    marker = "Original Traceback"
    if marker in text:
        head = f"{type(exc).__name__}: "
        at = text.rfind(head)
        if at > text.find(marker):
            text = text[at + len(head) :]
    return " ".join(text.split())


def _debug(ctx: Any) -> bool:
    env = os.environ.get("HPATOOL_DEBUG", "")
    return bool(ctx.meta.get("hpatool.debug")) or env not in ("", "0")


app = typer.Typer(
    cls=_Group,
    name="hpatool",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
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
    ("download-external", "external", "download_external", DATA_PANEL),
    ("preprocess", "external", "preprocess", DATA_PANEL),
    ("stats", "stats", "stats", DATA_PANEL),
    ("show", "stats", "show", DATA_PANEL),
    ("split", "training", "split", TRAINING_PANEL),
    ("train", "training", "train", TRAINING_PANEL),
    ("runs", "training", "runs_app", TRAINING_PANEL),
    ("evaluate", "predict", "evaluate", PREDICTION_PANEL),
    ("predict", "predict", "predict", PREDICTION_PANEL),
    ("synth", "synth", "synth", TOOLS_PANEL),
    ("demo", "synth", "demo", TOOLS_PANEL),
)


def _register() -> None:
    for name, module_name, attr, panel in COMMANDS:
        target = getattr(importlib.import_module(f"hpatool.cli.{module_name}"), attr)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name, rich_help_panel=panel)
        else:
            app.command(name, rich_help_panel=panel)(target)


_register()


def main() -> None:
    app(prog_name="hpatool")
