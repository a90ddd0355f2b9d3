"""Developer sessions: ``nox -s tests lint typecheck docs bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff", "import-linter")
    session.install("-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")  # the layer rules of pyproject.toml's [tool.importlinter]


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/cli.md from the app."""
    session.install("-e", ".")
    session.run("python", "-m", "hpatool.cli._docs", "docs/cli.md")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark script; copy the printed numbers into docs/benchmarks.md."""
    session.install("-e", ".[dev]")
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("*.py")):
        if not script.name.startswith("_"):
            session.run("python", str(script), *session.posargs)
