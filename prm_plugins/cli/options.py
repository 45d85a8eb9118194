"""Config dataclasses as ``argparse`` flags: the one way ``prm`` turns fields into options.

A workflow's config dataclass (``TrainConfig``, ``ExportConfig``, ``StepsEvalConfig`` ...)
carries each flag's help in its field metadata, as TRL's configs do, so the command line and
the Python API cannot drift apart. :func:`add_dataclass_arguments` adds one flag per field
(``max_steps`` -> ``--max-steps``), :func:`dataclass_from_args` reads them back.

Field metadata understood:

- ``help``: the help text;
- ``positional``: an argument, not a flag (optional, ``nargs="?"``, when the field has a
  default and is not ``required``);
- ``required``: the flag must be given;
- ``choices``: the accepted values;
- ``flag``: the flag's name when it is not ``--field-name``;
- ``metavar``: the value's name in the help.

Types: ``bool`` fields are switches (``--flag``/``--no-flag``; a field named ``no_*`` is a
plain ``--no-*`` switch), ``dict`` fields are repeatable ``KEY=VALUE`` flags (read back as a
list of strings), ``tuple[int, ...]`` fields take one or more values, ``X | None`` fields take
an ``X``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["add_dataclass_arguments", "dataclass_from_args", "flag_name"]

T = TypeVar("T")


def flag_name(field_name: str) -> str:
    """``"max_steps"`` -> ``"--max-steps"``."""
    return "--" + field_name.replace("_", "-")


def _unwrap_optional(kind: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``; ``(kind, False)`` otherwise."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return kind, False


def _converter(kind: type, accept_none: bool) -> Any:
    """``kind`` itself, or a converter that also reads ``none`` as ``None``."""
    if not accept_none:
        return kind

    def convert(text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names it in its errors
    return convert


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    required: Iterable[str] = (),
    none_word: bool = False,
) -> None:
    """Add one argument per field of the dataclass ``cls`` to ``parser``.

    Args:
        parser: the verb's parser.
        cls: a dataclass whose fields carry ``metadata`` (see the module docstring).
        required: field names that must be given, besides those whose metadata says so.
        none_word: optional (``X | None``) fields also accept the word ``none`` (``None``).

    The help shows each default, unless the parser's formatter already does
    (``argparse.ArgumentDefaultsHelpFormatter``).
    """
    must = set(required)
    hints = typing.get_type_hints(cls)
    shows_defaults = parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        help_text = meta.get("help", "")
        default = _default_of(f)
        is_required = bool(meta.get("required")) or f.name in must
        if meta.get("positional"):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
                    or is_required:
                parser.add_argument(f.name, metavar=f.name.upper(), help=help_text)
            else:
                parser.add_argument(f.name, nargs="?", default=default, help=help_text)
            continue
        _add_flag(parser, f, hints[f.name], meta, default, is_required=is_required,
                  none_word=none_word, shows_defaults=shows_defaults)


def _add_flag(parser: argparse.ArgumentParser, f: dataclasses.Field[Any], hint: Any,
              meta: dict[str, Any], default: Any, *, is_required: bool, none_word: bool,
              shows_defaults: bool) -> None:
    flag = meta.get("flag", flag_name(f.name))
    help_text = meta.get("help", "")
    kind, optional = _unwrap_optional(hint)
    origin = typing.get_origin(kind)
    extra: dict[str, Any] = {}
    if "metavar" in meta:
        extra["metavar"] = meta["metavar"]
    if kind is bool:
        action: Any = "store_true" if f.name.startswith("no_") and not default \
            else argparse.BooleanOptionalAction
        parser.add_argument(flag, dest=f.name, action=action, default=default, help=help_text)
        return
    if kind is dict or origin is dict:
        parser.add_argument(flag, dest=f.name, action="append", default=[],
                            help=help_text, **{"metavar": "KEY=VALUE", **extra})
        return
    note = ""
    if not shows_defaults and default is not None and not is_required:
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        note = f" (default: {shown})"
    if origin is tuple:
        parser.add_argument(flag, dest=f.name, nargs="+", type=typing.get_args(kind)[0],
                            default=default, help=help_text + note,
                            **{"metavar": "N", **extra})
        return
    if "choices" in meta:
        extra["choices"] = meta["choices"]
    parser.add_argument(flag, dest=f.name, type=_converter(kind, none_word and optional),
                        default=default, required=is_required, help=help_text + note, **extra)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from parsed arguments (attributes that are not fields are ignored)."""
    values = vars(args)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: values[name] for name in names if name in values})
