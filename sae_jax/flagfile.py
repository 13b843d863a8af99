"""Read an absl flagfile (``--name=value`` lines) into a frozen config dataclass.

Used where a library function needs another command's settings without
defining that command's absl flags (the SAE run trains its demo primary with
``configs/primary_demo.flags``). Values are converted by the field's type.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f"}


def _convert(raw: str, kind, *, name: str, where: str):
    origin = typing.get_origin(kind)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw.lower() in ("none", ""):
            return None
        return _convert(raw, options[0], name=name, where=where)
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"{where}: --{name}={raw!r} is not a boolean")
    if origin is tuple:
        args = [a for a in typing.get_args(kind) if a is not Ellipsis] or [str]
        return tuple(_convert(p.strip(), args[0], name=name, where=where)
                     for p in raw.split(",") if p.strip())
    if kind in (int, float, str):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{where}: --{name}={raw!r} is not a valid {kind.__name__}") from None
    raise ValueError(f"{where}: field {name} of type {kind} cannot be read from a flagfile")


def read_flag_lines(path: str | os.PathLike) -> dict[str, str]:
    """``{name: raw value}`` of a flagfile; comments (#, //) and blank lines skipped."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if not line.startswith("--"):
            raise ValueError(f"{path}: line {line!r} is not a --flag=value line")
        name, eq, value = line[2:].partition("=")
        if not eq:  # "--flag" alone is a boolean true; "--noflag" a boolean false
            name, value = (name[2:], "false") if name.startswith("no") else (name, "true")
        out[name.strip()] = value.strip()
    return out


def config_from_flagfile(cls, path: str | os.PathLike, *, ignore: tuple[str, ...] = ()):
    """An instance of dataclass ``cls`` with the flagfile's values over its defaults.

    A flag that is not a field of ``cls`` (and not in ``ignore``) is an error naming it.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for name, raw in read_flag_lines(path).items():
        if name in ignore:
            continue
        if name not in fields:
            if name.startswith("no") and name[2:] in fields:
                name, raw = name[2:], "false"
            else:
                raise ValueError(f"{path}: unknown setting --{name} for {cls.__name__}")
        values[name] = _convert(raw, hints[name], name=name, where=str(path))
    return cls(**values)
