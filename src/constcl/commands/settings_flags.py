"""The flags of ``constcl eval TASK`` and ``constcl extract``, generated from the settings
dataclass of the job, and turning parsed flags back into that dataclass.

Every field is the flag ``--field-name``; its default is the field's default, its help the
field's docstring entry (:func:`constcl.eval.settings.field_docs`), its choices the field's
``choices`` metadata; a bool field is ``--name / --no-name``; a field without a default is a
required flag (or a positional argument where the command says so); the fields of a nested
dataclass (the tracker's, the propagation's
hyper-parameters) are flags of their own. Nothing here repeats a default or a help text.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any, TypeVar

from constcl.eval.settings import (
    ClipProbeSettings,
    EncoderSettings,
    FrameEncoderSettings,
    field_docs,
)

T = TypeVar("T")

#: the help section of the fields a base class (or a nested class) defines; a task's own
#: fields come first, under the usual "options"
GROUPS: dict[type, str] = {
    EncoderSettings: "network and resources",
    FrameEncoderSettings: "feature maps",
    ClipProbeSettings: "clips and classifier",
}


def _plain(text: str) -> str:
    """Docstring markup -> terminal text: ``x`` -> x, :class:`X` -> X; % escaped for argparse."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("%", "%%")


def _flag_type(hint: Any) -> Any:
    """``int``, ``float``, ``str`` or ``bool`` from a field's type: the first member of a union
    (``str | Path`` -> ``str``: the settings turn it into a ``Path`` where it is one; a
    checkpoint may also be the word ``random``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)][0]
    return hint


def _is_nested(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _owner(cls: type, name: str) -> type:
    """The class in ``cls``'s MRO that declares field ``name``."""
    for klass in reversed(cls.__mro__):
        if name in inspect.get_annotations(klass):
            return klass
    return cls


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type, *,
                           groups: dict[type, str] | None = None,
                           positional: tuple[str, ...] = ()) -> None:
    """Add one flag per field of the dataclass ``cls`` (see the module docstring); the fields
    a class of ``groups`` (default :data:`GROUPS`) declares go in a section of that title; the
    required fields named in ``positional`` are positional arguments instead of flags."""
    groups = GROUPS if groups is None else groups
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    sections: dict[type, Any] = {}

    def section(klass: type) -> Any:
        if klass not in groups:
            return parser
        if klass not in sections:
            sections[klass] = parser.add_argument_group(groups[klass])
        return sections[klass]

    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _is_nested(hint):
            title = f"{f.name} ({hint.__name__})"
            add_settings_arguments(parser, hint, groups={**groups, hint: title})
            continue
        where = section(_owner(cls, f.name))
        help_text = _plain(docs.get(f.name, ""))
        if f.name in positional:
            where.add_argument(f.name, help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _flag_type(hint)
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        if kind is bool:
            where.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                               help=help_text)
            continue
        options: dict[str, Any] = {"type": kind, "help": help_text}
        if required:
            options["required"] = True
        else:
            options["default"] = f.default
            if f.default is not None:
                options["help"] += " (default: %(default)s)"
        if "choices" in f.metadata:
            options["choices"] = f.metadata["choices"]
        where.add_argument(flag, **options)


def settings_from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """``cls(**fields)`` with every dataclass field of ``cls`` taken from ``args`` (same name; a
    nested dataclass built from its own fields the same way), except those given in
    ``extra``. A bad value raises ``ValueError``, which ``constcl.cli.main`` prints as one
    ``constcl: error: ...`` line."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in extra:
            continue
        if _is_nested(hints[f.name]):
            values[f.name] = settings_from_args(hints[f.name], args)
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values, **extra)
