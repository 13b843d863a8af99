"""Settings from the command line and from flagfiles, for frozen config dataclasses.

- :func:`setting`: a config field with its flag's help sentence beside it.
- :func:`define_config_flags` / :func:`config_from_flags`: one absl flag per field of a
  config, read back into the config; both training commands expose every field this way.
- :func:`config_from_flagfile`: an absl flagfile (``--name=value`` lines) read into a
  config without defining absl flags, for a library function that needs another
  command's settings (the SAE run trains its demo primary with ``primary_demo.flags``).
- :func:`expand_flagfiles`: a command line with its flagfiles read in, nested ones looked
  up next to the file that names them (absl alone looks in the current directory only).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from absl import flags

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}

# The flags define_config_flags defines belong to the module that calls it (the command),
# so that absl's --help, which lists the main module's flags only, shows them.
flags.disclaim_key_flags()


def setting(default, help: str):
    """A config dataclass field whose flag has the help sentence ``help``:
    ``lr: float = setting(1e-3, "Peak learning rate.")``."""
    if not help.strip():
        raise ValueError("a setting needs a help sentence")
    return dataclasses.field(default=default, metadata={"help": help})


def define_config_flags(cls, *, skip=(), help_overrides: Mapping[str, str] | None = None,
                        flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define ``--<field>`` for each field of ``cls`` (tuples as comma lists), with the
    field's default and the help sentence declared with it (:func:`setting`), or the one
    ``help_overrides`` gives. A field without a help sentence (and not in ``skip``) is an
    error naming it, raised before any flag is defined."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    docs = {f.name: (help_overrides or {}).get(f.name) or f.metadata.get("help")
            for f in fields}
    for f in fields:
        if not docs[f.name]:
            raise TypeError(f"{cls.__name__}.{f.name} has no help sentence: declare it "
                            "with runkit.flags.setting(default, help)")
        kind = hints[f.name]
        if typing.get_origin(kind) is not tuple and kind not in _DEFINE:
            raise TypeError(f"no flag type for {cls.__name__}.{f.name}: {kind}")
    for f in fields:
        kind, doc = hints[f.name], docs[f.name]
        if typing.get_origin(kind) is tuple:
            flags.DEFINE_list(f.name, [str(v) for v in f.default], doc,
                              flag_values=flag_values)
        else:
            _DEFINE[kind](f.name, f.default, doc, flag_values=flag_values)


def config_from_flags(cls, values=flags.FLAGS, *, skip=()):
    """The frozen config from parsed flags; comma-list flags become tuples of the field's
    element type, and a value that does not convert is an error naming the flag."""
    hints = typing.get_type_hints(cls)
    settings = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = values[f.name].value
        if typing.get_origin(hints[f.name]) is tuple:
            element = (typing.get_args(hints[f.name]) or (str,))[0]
            try:
                value = tuple(element(s) for s in value if str(s).strip())
            except ValueError:
                raise ValueError(f"--{f.name} must be a comma-separated list of "
                                 f"{element.__name__}, got {','.join(value)!r}") from None
        settings[f.name] = value
    return cls(**settings)


# ------------------------------------------------------------------ flagfiles

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


_FLAGFILE = ("--flagfile", "-flagfile")


def _flagfile_lines(path: Path, chain: tuple[Path, ...]) -> list[str]:
    """The flag lines of ``path``, nested flagfiles expanded in place."""
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ValueError(f"flagfiles include each other in a cycle: {cycle}")
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if not line.startswith("-"):
            raise ValueError(f"{path}: line {line!r} is not a --flag=value line")
        name, eq, value = line.partition("=")
        if name in _FLAGFILE and eq:
            out += _flagfile_lines(_nested(value.strip(), path), (*chain, path.resolve()))
        else:
            out.append(line)
    return out


def _nested(name: str, including: Path) -> Path:
    """A flagfile named inside ``including``: next to it first, then from the current
    directory (absl's own rule), so a flagfile that includes its neighbours works from
    any directory."""
    beside = including.parent / name
    for candidate in (beside, Path(name)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{including}: --flagfile={name} not found (looked in "
                            f"{including.parent.resolve()} and in {Path.cwd()})")


def expand_flagfiles(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--flagfile=PATH`` (or ``--flagfile PATH``) replaced by the
    file's flag lines, recursively, in place: later flags still override earlier ones.
    PATH on the command line is read from the current directory; a relative one inside a
    flagfile next to that flagfile first (:func:`_nested`). Arguments after ``--`` are left
    as they are (absl stops reading flags there). A missing file, a line that is not a
    flag or a cycle is an error naming the file."""
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--":
            return [*out, arg, *args]
        name, eq, value = arg.partition("=")
        if name not in _FLAGFILE:
            out.append(arg)
            continue
        if not eq:
            value = next(args, None)
            if value is None:  # a bare trailing --flagfile: absl reports it
                out.append(arg)
                break
        if not Path(value).is_file():
            raise FileNotFoundError(f"--flagfile={value}: no such file (from {Path.cwd()})")
        out += _flagfile_lines(Path(value), ())
    return out


def read_flag_lines(path: str | os.PathLike) -> dict[str, str]:
    """``{name: raw value}`` of a flagfile (nested flagfiles followed, later lines win);
    comments (#, //) and blank lines skipped."""
    out = {}
    for line in expand_flagfiles([f"--flagfile={path}"]):
        name, eq, value = line.lstrip("-").partition("=")
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
