"""Options from the command line and from ``--config`` files, for ``engine.config``: the flag of
an option (``flag``), the layers merged (``merge_options``: ``None`` means not given), a TOML
file or a run's ``config.json`` read and checked against the options' types
(``read_config_file``), each value coerced to its option's type with one line naming the file
and the key when it does not fit. Light to import: the standard library only."""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from hpatool._io import not_utf8_where, path_problem
from hpatool.errors import NotFound, UsageError


def flag(name: str) -> str:
    """The command-line flag of option ``name``: ``batch_size`` -> ``--batch-size``."""
    return "--dataset" if name == "datasets" else "--" + name.replace("_", "-")


def merge_options(cls: type, *layers: dict[str, Any] | None) -> dict[str, Any]:
    """The options of ``cls`` from ``layers``, later ones winning; ``None`` means not given.
    An unknown name is a programming error here (files are checked by ``read_config_file``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in names:
                raise ValueError(f"unknown {cls.__name__} option {key!r}")
            if value is not None:
                merged[key] = value
    return merged


def read_config_file(path: str | Path, cls: type, section: str | tuple[str, ...]) -> dict[str, Any]:
    """The options in a configuration file, checked against ``cls``'s fields.

    A ``.toml`` file holds the options at its top level or in a ``[section]`` table, named as
    the flags are (``batch-size``) or as the fields are (``batch_size``). A ``.json`` file is a
    run's ``config.json`` (its ``"options"``) or a plain object of options. Values are checked
    against the option types; a bad one is a one-line ``UsageError`` naming the file and key.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise NotFound(f"--config {file}: {path_problem(file)}")
    try:
        text = file.read_text(encoding="utf-8")
        doc: Any = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        where = not_utf8_where(file)
        raise UsageError(f"--config {file}, {where}; save the file as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"--config {file}: cannot read it ({exc})") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if file.suffix.lower() == ".json" else "TOML"
        raise UsageError(f"--config {file}: not valid {kind} ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("options"), dict):
        doc = doc["options"]  # a run's config.json
    for name in (section,) if isinstance(section, str) else section:
        if isinstance(doc, dict) and isinstance(doc.get(name), dict):
            doc = doc[name]  # the first of the sections the file has
            break
    if not isinstance(doc, dict):
        raise UsageError(f"--config {file}: expected a table of options")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    options: dict[str, Any] = {}
    for raw_key, value in doc.items():
        key = str(raw_key).replace("-", "_")
        if key == "dataset" and "datasets" in fields:
            key = "datasets"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0].replace('_', '-')!r}?" if close else ""
            raise UsageError(f"--config {file}: unknown option {raw_key!r}{hint}")
        options[key] = _coerce(value, hints[key], f"--config {file}: {raw_key}")
    return options


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (int, float, str, bool, list[str], optional), or an error."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(v, args[0] if args else str, where) for v in items]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str | int | float) and not isinstance(value, bool),
    }.get(hint, True)
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise UsageError(f"{where} = {value!r} is not a valid {name}")
    return hint(value) if hint in (int, float, str) else value
